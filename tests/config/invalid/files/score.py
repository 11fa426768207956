"""A minimal entry script: what validation requires of one."""


def init():
    pass


def run(raw_data):
    return raw_data
