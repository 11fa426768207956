"""A header echo, @rawhttp: every X-Echo-* request header comes back without the prefix,
and X-Model-Version says which model answered (an endpoint behind a router)."""

import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse

MODEL_VERSION = "2"


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    echoed = {
        name[len("X-Echo-") :]: value
        for name, value in request.headers.items()
        if name.lower().startswith("x-echo-")
    }
    if request.headers.get("X-Api-Version") != "2024-01":
        return AMLResponse("unknown or missing X-Api-Version", 400)
    headers = {
        "Content-Type": "application/json",
        "X-Model-Version": MODEL_VERSION,
        **{f"X-{name}": value for name, value in echoed.items()},
    }
    return AMLResponse(json.dumps(echoed), 200, headers)
