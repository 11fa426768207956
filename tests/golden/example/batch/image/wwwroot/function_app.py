"""Rendered by deployer from deploy.yaml; do not edit (re-render instead).

The function app (Azure Functions Python v2 programming model): one function,
``score_blob``, for the target's blob trigger. The entry script is
imported and its ``init()`` called once per worker process, when the worker indexes this
module; each event is then scored through deployer's invocation core
(deployer_scoring.py), as the scoring server scores ``/score``.
"""

import logging

import azure.functions as func
import deployer_scoring  # the worker puts the app's root (AzureWebJobsScriptRoot) on sys.path

ENTRY_SCRIPT = deployer_scoring.load_entry_script()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name(name="score_blob")
@app.blob_trigger(
    arg_name="inputblob",
    path="input/{name}.json",
    connection="TriggerConnectionString",
)
@app.blob_output(
    arg_name="outputblob",
    path="output/{name}_out.json",
    connection="TriggerConnectionString",
)
def score_blob(inputblob: func.InputStream, outputblob: func.Out[str]) -> None:
    """A new input blob is scored as a POST /score of its content, and the answer's body
    written as the output blob. A failure is logged (with run()'s traceback) and raised:
    the host retries the blob and, after its retries, records it in the
    webjobs-blobtrigger-poison queue."""
    try:
        answer = ENTRY_SCRIPT.score_event(f"blob {inputblob.name}", inputblob.read())
        outputblob.set(answer.text())
    except Exception:
        logging.exception("scoring blob %s failed", inputblob.name)
        raise
