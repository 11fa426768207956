"""@rawhttp with Flask idioms on the request and on the response.

In Azure ML the request is Flask's and AMLResponse is a Flask Response: whatever a
script does with them there must work the same here. The case is the ``case`` query
parameter; every answer is deterministic (no ports, no addresses that differ between
servers).
"""

import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


def _request_view(request: AMLRequest) -> dict:
    env = request.environ
    upload = request.files.get("upload")
    return {
        "method": request.method,
        "environ": {
            key: env.get(key)
            for key in (
                "REQUEST_METHOD",
                "PATH_INFO",
                "QUERY_STRING",
                "SCRIPT_NAME",
                "SERVER_PROTOCOL",
                "REMOTE_ADDR",
                "wsgi.url_scheme",
                "CONTENT_TYPE",
                "HTTP_X_REPEATED",
                "HTTP_USER_AGENT",
                "HTTP_X_UNDER_SCORE",  # sent as X_Under_Score: gunicorn drops it
            )
        },
        # SERVER_NAME/SERVER_PORT: the listening address (0.0.0.0 for azmlinfsrv).
        "server_port_is_host_port": env.get("SERVER_PORT") == request.host.rpartition(":")[2],
        "path": request.path,
        "full_path": request.full_path,
        "args": request.args.to_dict(flat=False),
        "repeated": request.headers.get("X-Repeated"),
        "repeated_list": request.headers.getlist("X-Repeated"),
        "cookies": request.cookies.to_dict(),
        "user_agent": request.user_agent.string,
        "content_type": request.content_type,
        "mimetype": request.mimetype,
        "content_length": request.content_length,
        "is_json": request.is_json,
        "json_silent": request.get_json(silent=True),
        "form": request.form.to_dict(flat=False),
        "upload": None
        if upload is None
        else {"filename": upload.filename, "mimetype": upload.mimetype, "size": len(upload.read())},
        "data_length": len(request.get_data()),
        "values": request.values.to_dict(flat=False),
    }


@rawhttp
def run(request: AMLRequest):
    case = request.args.get("case", "request")
    if case == "request":
        return AMLResponse(_request_view(request), 200, json_str=True)
    if case == "input_stream":  # the raw WSGI input, read before anything parses it
        head = request.input_stream.read(4)
        return AMLResponse(head + b"|" + request.stream.read(), 200)
    if case == "stream":
        return AMLResponse(request.stream.read() + b"|" + request.get_data(), 200)
    if case == "json_strict":  # get_json() on a body that isn't JSON: raises, a 500
        return {"json": request.get_json()}
    if case == "json_caught":  # the exceptions werkzeug/Flask raise, caught by the script
        try:
            request.get_json()
        except Exception as exc:
            return {"error": type(exc).__name__, "code": getattr(exc, "code", None)}
        return {"error": None}
    if case == "mimetype":
        resp = AMLResponse(b"\x89PNG\r\n\x1a\nfake", 200)
        resp.mimetype = "image/png"
        return resp
    if case == "content_type":
        resp = AMLResponse("a,b\n1,2\n", 200)
        resp.content_type = "text/csv; charset=utf-8"
        return resp
    if case == "status":
        resp = AMLResponse("made", 200)
        resp.status = "201 CREATED"
        return resp
    if case == "status_code":
        resp = AMLResponse("accepted", 200)
        resp.status_code = 202
        return resp
    if case == "extend":
        resp = AMLResponse("extended", 200, {"X-Split": "a, b"})
        resp.headers.extend([("X-One", "1"), ("X-Two", "2")])
        resp.headers.extend({"X-Three": "3"})
        resp.headers.add("X-One", "again")
        return resp
    if case == "cookie":
        resp = AMLResponse("with cookies", 200)
        resp.set_cookie("session", "abc", httponly=True, path="/")
        resp.set_cookie("theme", "dark", samesite="Lax", secure=True)
        resp.delete_cookie("old")
        return resp
    if case == "response_json":  # reading back a JSON AMLResponse
        made = AMLResponse({"a": [1, 2]}, 200, json_str=True)
        return {
            "json": made.get_json(),
            "is_json": made.is_json,
            "mimetype": made.mimetype,
            "status": made.status,
            "data": made.get_data(as_text=True),
            "length": made.content_length,
        }
    if case == "set_data":
        resp = AMLResponse("first", 200)
        resp.set_data(json.dumps({"second": True}))
        resp.mimetype = "application/json"
        return resp
    if case == "failed_5xx":  # a 5xx from run(): Azure ML marks the run failed
        return AMLResponse("unavailable", 503, {"Retry-After": "5"})
    if case == "location":
        return AMLResponse("", 302, {"Location": "/elsewhere/ü"})
    if case == "no_content":
        return AMLResponse("dropped", 204)
    if case == "list_body":  # an iterable that is not streamed: joined
        return AMLResponse(["a", b"b", "c"], 200)
    return AMLResponse(f"unknown case {case}", 400)
