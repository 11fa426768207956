"""A GET endpoint with a query, @rawhttp: ?q=... (repeatable) and ?limit=N."""

import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method != "GET":
        return AMLResponse("GET only", 405)
    answer = {"q": request.args.getlist("q"), "limit": int(request.args.get("limit", "10"))}
    return AMLResponse(json.dumps(answer), 200, {"Content-Type": "application/json; charset=utf-8"})
