"""The ``kubernetes`` target's section of deploy.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from deployer.config.fields import DnsLabel, PositiveFloat, Rule, Section, TargetConfig, error

KIND = "kubernetes"

# Kubernetes resource quantities: a plain decimal number and a suffix (the API also takes
# signs, exponents and forms like ".5", which no one needs for a container's resources).
CpuQuantity = Annotated[
    str,
    Rule(
        "CPU quantity",
        "a number of cores with an optional suffix (m for thousandths, or k, M, G, T, P, E, "
        "Ki, Mi, Gi, Ti, Pi, Ei), such as 500m, 1 or 1.5",
        r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
    ),
]
# No "m" for memory: Kubernetes reads 512m as 0.512 bytes, and no container starts with that.
MemoryQuantity = Annotated[
    str,
    Rule(
        "memory quantity",
        "a number of bytes with an optional suffix Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024) "
        "or k, M, G, T, P, E (powers of 1000), such as 512Mi or 1.5Gi",
        r"^[0-9]+(\.[0-9]+)?(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
    ),
]


# The pod runs as a non-root user with every capability dropped: ports below 1024 cannot be
# bound on runtimes that keep the privileged-port limit. (A type of its own: a ge=1024 given
# to Field() beside the shared Port type is overridden by Port's own ge=1.)
UnprivilegedPort = Annotated[int, Field(ge=1024, le=65535)]


class Autoscale(Section):
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_cpu_utilization: int = Field(default=70, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscale:
        if self.min_replicas > self.max_replicas:
            raise error(
                "range",
                "max_replicas ({max}) is below min_replicas ({min})",
                max=self.max_replicas,
                min=self.min_replicas,
                at="max_replicas",
            )
        return self


class Resources(Section):
    cpu: CpuQuantity = "500m"
    memory: MemoryQuantity = "1Gi"


class Config(TargetConfig):
    model_config = ConfigDict(title="kubernetes target")

    type: Literal["kubernetes"]
    namespace: DnsLabel = "default"
    context: str | None = Field(default=None, description="kubeconfig context to deploy with.")
    replicas: int = Field(default=1, ge=1, le=1000)
    autoscale: Autoscale | None = None
    resources: Resources = Field(default_factory=Resources)
    port: UnprivilegedPort = Field(
        default=5001, description="Container port of the scoring server (>= 1024)."
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "LoadBalancer"
    force_conflicts: bool = Field(
        default=False,
        description="Take over fields another field manager (kubectl, Helm, a GitOps "
        "controller) owns in the applied objects. By default such a conflict fails the deploy "
        "and names the other manager.",
    )
    pull_secret: bool | None = Field(
        default=None,
        description="Create an image pull secret from the registry's credentials "
        "(registry.username_env/password_env) for the pods. Default: with registry auth "
        "basic; not with acr, whose AKS clusters pull by their kubelet identity "
        "('az aks update --attach-acr'); never with none.",
    )
    ready_timeout_s: PositiveFloat = Field(
        default=600,
        description="How long a rollout may take until every new replica is available "
        "(image pulls and init() included) before the deploy rolls it back; Kubernetes' "
        "own progressDeadlineSeconds defaults to the same 600.",
    )
