"""A streamed answer far larger than any buffer: 1 MiB chunks, up to 10 GiB.

The request body is a path where the generator writes how many chunks it has produced,
after each one, so a test can watch it without asking the (busy) worker.
"""

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse

CHUNK = b"x" * (1 << 20)
CHUNKS = 10 * 1024


def init():
    pass


def _chunks(counter: str):
    for produced in range(1, CHUNKS + 1):
        yield CHUNK
        with open(counter, "w") as f:
            f.write(str(produced))


@rawhttp
def run(request: AMLRequest):
    return AMLResponse(_chunks(request.get_data(as_text=True)), 200)
