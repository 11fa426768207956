"""The command line (``deployer``): ``main`` is the entry point; each group of commands is a
module of its own (``build_commands``, ``deploy_commands``, ``operate_commands``)."""

from deployer.cli.main import main

__all__ = ["main"]
