"""The one list of target kinds.

The config schema reads its valid ``type`` values and target sections from here, and only
the kinds' ``schema.py`` modules are imported with it. ``render.py`` and ``driver.py`` are
imported by name, when a command needs them: loading deploy.yaml must neither load Jinja
nor any platform's SDK, and must not import the modules that import the config model.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Annotated, Union, cast

from pydantic import Field

from deployer.targets.aci import schema as aci
from deployer.targets.base import Renderer, Schema
from deployer.targets.functions import schema as functions
from deployer.targets.iot_edge import schema as iot_edge
from deployer.targets.kubernetes import schema as kubernetes
from deployer.targets.local import schema as local

if TYPE_CHECKING:
    from deployer.targets.contract import DriverModule

SCHEMAS: dict[str, Schema] = {
    kind.KIND: kind for kind in (local, aci, kubernetes, functions, iot_edge)
}
KINDS: tuple[str, ...] = tuple(SCHEMAS)

# pydantic picks the section model by the ``type`` key, and reports an unknown type once,
# listing the valid ones, instead of one error per kind. The union's members are known only
# at run time, so to a type checker it is a value handed to pydantic, not a type: annotations
# use TargetConfig instead (see deployer.config.model).
TargetConfigUnion: object = Annotated[
    Union[tuple(kind.Config for kind in SCHEMAS.values())],  # noqa: UP007
    Field(discriminator="type"),
]


def renderer(kind: str) -> Renderer:
    return cast("Renderer", import_module(f"deployer.targets.{SCHEMAS[kind].KIND}.render"))


# The optional dependencies (pyproject's extras) each kind's driver needs.
EXTRAS = {"aci": "azure", "functions": "azure", "iot_edge": "azure", "kubernetes": "kubernetes"}


def driver(kind: str) -> DriverModule:
    try:
        module = import_module(f"deployer.targets.{SCHEMAS[kind].KIND}.driver")
    except ModuleNotFoundError as missing:
        if (missing.name or "").startswith("deployer") or kind not in EXTRAS:
            raise  # deployer's own module: a bug, not an installation to fix
        from deployer.errors import UserError

        raise UserError(
            f"deploying to {kind} targets needs the package {missing.name!r}, which is not "
            f"installed: pip install 'deployer[{EXTRAS[kind]}]'"
        ) from missing
    return cast("DriverModule", module)


if TYPE_CHECKING:
    # What mypy checks, and the run time never imports: every kind's render and driver
    # modules implement their protocols in full.
    from deployer.targets.aci import driver as _aci_driver
    from deployer.targets.aci import render as _aci_render
    from deployer.targets.functions import driver as _functions_driver
    from deployer.targets.functions import render as _functions_render
    from deployer.targets.iot_edge import driver as _iot_edge_driver
    from deployer.targets.iot_edge import render as _iot_edge_render
    from deployer.targets.kubernetes import driver as _kubernetes_driver
    from deployer.targets.kubernetes import render as _kubernetes_render
    from deployer.targets.local import driver as _local_driver
    from deployer.targets.local import render as _local_render

    _RENDERERS: list[Renderer] = [
        _local_render,
        _aci_render,
        _kubernetes_render,
        _functions_render,
        _iot_edge_render,
    ]
    _DRIVERS: list[DriverModule] = [
        _local_driver,
        _aci_driver,
        _kubernetes_driver,
        _functions_driver,
        _iot_edge_driver,
    ]
