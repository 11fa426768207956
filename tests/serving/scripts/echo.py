"""Raw JSON string mode: run(data) gets the body as a str. The input picks the result."""

import json
import os
import time

CALLS = {"init": 0}


def init():
    CALLS["init"] += 1
    assert os.environ["AZUREML_MODEL_DIR"], "AZUREML_MODEL_DIR is set before init()"


def run(data):
    request = json.loads(data)
    kind = request.get("kind", "dict")
    if kind == "fail":
        raise ValueError("asked to fail")
    if kind == "sleep":
        time.sleep(request["seconds"])
        return "slept"
    if kind == "spin":  # pure-Python loop: interruptible only between bytecodes
        end = time.monotonic() + request["seconds"]
        while time.monotonic() < end:
            pass
        return "spun"
    if kind == "swallow":  # a script that catches everything, even the timeout
        try:
            time.sleep(request["seconds"])
        except BaseException:
            time.sleep(0.2)
        return "swallowed"
    if kind == "str":
        return "héllo wörld"
    if kind == "list":
        return [1, 2.5, "three", None, True]
    if kind == "none":
        return None
    if kind == "unencodable":
        return {1, 2}
    if kind == "model_dir":
        return os.environ["AZUREML_MODEL_DIR"]
    if kind == "init_calls":
        return CALLS["init"]
    if kind == "exit":  # the worker process dies in run(): supervisor tests
        os._exit(request.get("status", 1))
    if kind == "whoami":  # which server answered: ECHO_TAG names it (handover tests)
        return {"tag": os.environ.get("ECHO_TAG"), "pid": os.getpid()}
    return {"echo": request, "nested": {"ok": True}}
