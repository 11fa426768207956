"""Blob trigger: score each new input blob as a ``POST /score`` of its content, and write
the answer's body as the output blob.

A failure is logged (with run()'s traceback) and raised: the Functions host retries the
blob and, after its retries, records it in the ``webjobs-blobtrigger-poison`` queue.
"""

import logging

import azure.functions as func
import deployer_scoring  # the worker puts the app's root (AzureWebJobsScriptRoot) on sys.path

ENTRY_SCRIPT = deployer_scoring.load_entry_script()


def main(inputblob: func.InputStream, outputblob: func.Out[str]) -> None:
    try:
        answer = ENTRY_SCRIPT.score_event(f"blob {inputblob.name}", inputblob.read())
        outputblob.set(answer.text())
    except Exception:
        logging.exception("scoring blob %s failed", inputblob.name)
        raise
