"""The one list of target kinds. The config schema reads its valid ``type`` values from here."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from deployer.targets import aci, functions, iot_edge, kubernetes, local
from deployer.targets.base import TargetKind

ALL_KINDS: dict[str, TargetKind] = {
    kind.KIND: kind for kind in (local, aci, kubernetes, functions, iot_edge)
}

# pydantic picks the section model by the ``type`` key, and reports an unknown type once,
# listing the valid ones, instead of one error per kind. The union's members are known only
# at run time, so to a type checker it is a value handed to pydantic, not a type: annotations
# use TargetConfig instead (see deployer.config.model).
TargetConfigUnion: object = Annotated[
    Union[tuple(kind.Config for kind in ALL_KINDS.values())],  # noqa: UP007
    Field(discriminator="type"),
]


def kind_of(target_type: str) -> TargetKind:
    return ALL_KINDS[target_type]
