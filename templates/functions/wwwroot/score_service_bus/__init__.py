"""Service Bus trigger: score each queue message as a ``POST /score`` of its body.

The result is the function's return value, which function.json sends to the output queue
when deploy.yaml names one (and which is dropped when it does not), so that one handler
serves both. A failure is logged (with run()'s traceback) and raised: Service Bus
redelivers the message and dead-letters it after its maximum delivery count.
"""

import logging

import azure.functions as func
import deployer_scoring  # the worker puts the app's root (AzureWebJobsScriptRoot) on sys.path

ENTRY_SCRIPT = deployer_scoring.load_entry_script()


def main(message: func.ServiceBusMessage) -> str:
    try:
        what = f"message {message.message_id}"
        return ENTRY_SCRIPT.score_event(what, message.get_body(), message.content_type).text()
    except Exception:
        logging.exception("scoring message %s failed", message.message_id)
        raise
