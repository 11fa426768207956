"""@rawhttp with the SDK v1 module names (azureml.contrib.services)."""

import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "GET":
        return AMLResponse(
            json.dumps({"args": request.args.getlist("x"), "path": request.full_path}),
            200,
            {"Content-Type": "application/json"},
        )
    if request.method != "POST":
        return AMLResponse("bad method", 405)
    kind = request.headers.get("X-Kind", "echo")
    if kind == "json":
        return AMLResponse(request.get_json(), 201, json_str=True)
    if kind == "teapot":
        return AMLResponse("short and stout", 418, {"X-Extra": "a, b"})
    if kind == "error":
        return AMLResponse("broken", 503)
    if kind == "none":
        return AMLResponse(None, 200)
    if kind == "plain":
        return {"plain": True}
    if kind == "files":
        upload = request.files["upload"]
        return AMLResponse(
            json.dumps(
                {
                    "filename": upload.filename,
                    "size": len(upload.read()),
                    "field": request.form.get("field"),
                }
            ),
            200,
            {"Content-Type": "application/json"},
        )
    if kind == "raise":
        raise RuntimeError("raw failure")
    return AMLResponse(request.get_data(), 200, {"Content-Type": "application/octet-stream"})
