"""HTTP trigger: a request to the function is scored as the scoring server scores /score.

The answer is the server's: status, headers and body (deployer_scoring.py), including a
500 with a generic message when run() fails (the traceback goes to the log).
"""

import azure.functions as func
import deployer_scoring  # the worker puts the app's root (AzureWebJobsScriptRoot) on sys.path

ENTRY_SCRIPT = deployer_scoring.load_entry_script()


def main(req: func.HttpRequest) -> func.HttpResponse:
    answer = ENTRY_SCRIPT.answer(req.method, req.url, req.headers, req.get_body())
    content_type = answer.header("Content-Type") or "application/json"
    mimetype, _, params = content_type.partition(";")
    charset = params.partition("charset=")[2].strip() or None
    response = func.HttpResponse(
        answer.body, status_code=answer.status, mimetype=mimetype.strip(), charset=charset
    )
    for name, value in answer.headers:
        if name.lower() != "content-type":  # the worker writes it from mimetype and charset
            response.headers.add_header(name, value)
    return response
