"""The kinds served, and the API's errors as ``Status`` bodies."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

GIT_VERSION = "v1.33.2"  # the API server's, and the node's kubelet's


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = True  # has a status subresource

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:  # as in messages: deployments.apps, pods
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("Namespace", "", "v1", "namespaces", False, ("ns",)),
        Kind("Node", "", "v1", "nodes", False, ("no",)),
        Kind("Pod", "", "v1", "pods", True, ("po",)),
        Kind("Service", "", "v1", "services", True, ("svc",)),
        Kind("Secret", "", "v1", "secrets", True, (), status=False),
        Kind("Event", "", "v1", "events", True, ("ev",), status=False),
        Kind("Deployment", "apps", "v1", "deployments", True, ("deploy",)),
        Kind("ReplicaSet", "apps", "v1", "replicasets", True, ("rs",)),
        Kind("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers", True,
             ("hpa",)),
    )
}  # fmt: skip


class ApiError(Exception):
    """An API error: ``status()`` is the ``Status`` body kube-apiserver sends."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
        body |= {"status": "Failure", "message": self.message, "reason": self.reason}
        if self.details is not None:
            body["details"] = self.details
        return body | {"code": self.code}


def not_found(kind: Kind, name: str) -> ApiError:
    details = {"name": name, "kind": kind.plural} | ({"group": kind.group} if kind.group else {})
    return ApiError(404, "NotFound", f'{kind.resource} "{name}" not found', details)


def kind_of(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"the double does not serve kind {kind!r}")
    return KINDS[kind]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
