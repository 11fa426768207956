"""The conformance suite uses the Docker engine and the registry that scripts/dev-env sets up."""

from tests.docker.conftest import client, dev_env

__all__ = ["client", "dev_env"]
