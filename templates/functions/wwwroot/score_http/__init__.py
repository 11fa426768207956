"""HTTP trigger: POST a request body, get ``run()``'s result back as JSON.

A failing ``run()`` answers 500 with ``{"message": ...}``, as the scoring server does.
"""

import json
import logging

import azure.functions as func
import deployer_scoring  # the worker puts the app's root (AzureWebJobsScriptRoot) on sys.path

ENTRY_SCRIPT = deployer_scoring.load_entry_script()


def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        payload = req.get_body().decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "the request body is not UTF-8 text")
    try:
        result = deployer_scoring.score(ENTRY_SCRIPT, payload)
    except Exception as exc:
        logging.exception("run() failed")
        return _error(500, f"run() failed: {type(exc).__name__}: {exc}")
    return func.HttpResponse(result, status_code=200, mimetype="application/json")


def _error(status: int, message: str) -> func.HttpResponse:
    body = json.dumps({"message": message})
    return func.HttpResponse(body, status_code=status, mimetype="application/json")
