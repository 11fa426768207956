"""Blob trigger: score each new input blob, write ``run()``'s result as the output blob.

A failure is logged and raised again: the Functions host retries the blob and, after its
retries, records it in the ``webjobs-blobtrigger-poison`` queue.
"""

import logging

import azure.functions as func
import deployer_scoring  # the worker puts the app's root (AzureWebJobsScriptRoot) on sys.path

ENTRY_SCRIPT = deployer_scoring.load_entry_script()


def main(inputblob: func.InputStream, outputblob: func.Out[str]) -> None:
    try:
        result = deployer_scoring.score(ENTRY_SCRIPT, inputblob.read().decode("utf-8"))
    except Exception:
        logging.exception("scoring blob %s failed", inputblob.name)
        raise
    outputblob.set(result)
