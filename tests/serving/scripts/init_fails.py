"""init() raises: the server must exit non-zero with this traceback on stderr."""


def init():
    raise RuntimeError("model file is corrupt: init_fails sentinel")


def run(data):
    return data
