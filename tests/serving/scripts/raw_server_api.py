"""@rawhttp with the azureml_inference_server_http.api module names."""

from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    body = request.get_data(as_text=True)
    return AMLResponse(body.upper(), 200, {"Content-Type": "text/plain"})
