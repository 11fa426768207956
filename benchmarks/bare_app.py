"""Reference servers for the benchmark: the least a uvicorn ASGI handler can do.

``bare``: read the body, call the entry script's run() inline, json.dumps the result.
``bare_thread``: the same, with run() handed to a one-thread pool and awaited, to
measure what a thread hand-off costs per request.

Started by bench_server.py as ``python benchmarks/bare_app.py MODE SCRIPT MODEL_DIR PORT``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn


def main() -> None:
    mode, script, model_dir, port = sys.argv[1:5]
    os.environ["AZUREML_MODEL_DIR"] = model_dir
    spec = importlib.util.spec_from_file_location("entry_module", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init()
    run = module.run
    pool = ThreadPoolExecutor(1)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] != "POST":  # the benchmark's readiness probe
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"2")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})
            return
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
        if mode == "bare_thread":
            result = await asyncio.get_running_loop().run_in_executor(pool, run, body.decode())
        else:
            result = run(body.decode())
        out = json.dumps(result).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(port),
        loop="auto",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
