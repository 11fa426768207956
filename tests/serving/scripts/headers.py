"""run(data, request_headers): the headers dict Azure ML passes."""


def init():
    pass


def run(data, request_headers):
    return {
        "data": data,
        "custom": request_headers.get("X-Custom-Header"),
        "content_type": request_headers.get("Content-Type"),
        "has_host": "Host" in request_headers,
    }
