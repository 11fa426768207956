"""@rawhttp returning an AMLResponse over a generator: a streamed (chunked) answer.

Each item comes ``DELAY`` seconds after the last. A body of ``raise`` makes the
generator raise after two items, and ``raise-at-once`` before the first. GET
?case=closed reports how many generators were closed (their ``finally`` ran), and
?case=reset sets that count to 0.
"""

import time

from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

DELAY = 0.3
ITEMS = 4
closed = []


def init():
    pass


def _items(fail_at):
    try:
        for i in range(ITEMS):
            if i:
                time.sleep(DELAY)
            if i == fail_at:
                raise RuntimeError("failed mid-stream" if i else "failed before the first item")
            yield f"item {i}\n"
    finally:
        closed.append(True)


@rawhttp
def run(request: AMLRequest):
    case = request.args.get("case")
    if case == "closed":
        return {"closed": len(closed)}
    if case == "reset":
        closed.clear()
        return {"closed": 0}
    fail_at = {b"raise": 2, b"raise-at-once": 0}.get(request.get_data())
    return AMLResponse(_items(fail_at), 200, {"Content-Type": "text/plain; charset=utf-8"})
