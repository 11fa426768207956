"""``deployer plan``'s look at a kubernetes target's cluster: the RBAC it needs, and what a
deploy's apply would change, object by object.

Each rendered object (the Deployment as the driver applies it, marked with the revision) is
applied with server-side apply and ``dryRun=All``: the API server merges it with the live
object, defaults and validates it, and stores nothing. Its answer is compared with the live
object, both without what the server sets by itself (managedFields, resourceVersion, status,
...), as a unified diff. A conflict with another field manager, or any API error, is that
object's result; the others are still shown.

The kubernetes SDK is imported (with the driver) only when a cluster is asked.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import yaml

from deployer.errors import DeployerError, DeployFailed
from deployer.targets.kubernetes import objects, rbac
from deployer.targets.kubernetes.schema import Config

if TYPE_CHECKING:
    from deployer.config.model import DeployConfig
    from deployer.targets.contract import Session
    from deployer.targets.kubernetes.driver import KubernetesDriver

# The kinds a deploy applies from the rendered artifacts, in the order it applies them.
ORDER = ("Deployment", "Service", "HorizontalPodAutoscaler")
# What the API server sets by itself: a difference there is no change a deploy makes.
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp")
SERVER_ANNOTATIONS = (objects.KUBE_REVISION,)
YAML_WIDTH = 4096  # long values stay on one line

State = Literal["new", "changed", "unchanged", "failed"]


@dataclass(frozen=True)
class ObjectDiff:
    """One rendered object: live → as the apply would leave it."""

    ref: str  # "deployment/diabetes-production"
    state: State
    diff: tuple[str, ...] = ()  # unified diff lines; a new object's against nothing
    error: str = ""  # why the dry run failed (a conflict, a refusal)

    def lines(self) -> list[str]:
        """For the console: one line, or (changed) the diff indented under it."""
        if self.state == "changed":
            return [f"{self.ref}:", *(f"    {line}" for line in self.diff)]
        if self.state == "failed":
            return [f"{self.ref}: dry run failed: {self.error}"]
        return [f"{self.ref}: {self.state}"]


def rendered(artifacts: Mapping[str, str], revision: str) -> list[dict[str, Any]]:
    """The objects a deploy applies, as it applies them (the Deployment with the revision);
    the candidate and the image pull secret are not among them."""
    found = [yaml.safe_load(text) for text in artifacts.values()]
    manifests = [m for m in found if isinstance(m, dict) and m.get("kind") in ORDER]
    manifests.sort(key=lambda m: ORDER.index(m["kind"]))
    return [
        objects.with_revision(m, revision) if m["kind"] == "Deployment" else m for m in manifests
    ]


def dry_run(
    driver: KubernetesDriver, artifacts: Mapping[str, str], revision: str
) -> list[ObjectDiff]:
    """Each rendered object, dry-run applied and compared with the live one. An API error
    (409 conflict, 403, 422) is that object's result; an unreachable cluster or refused
    credentials raise (the driver's platform errors, ``UserError``)."""
    return [_one(driver, manifest) for manifest in rendered(artifacts, revision)]


def dry_run_diff(
    driver: KubernetesDriver, artifacts: Mapping[str, str], revision: str
) -> list[str]:
    """``dry_run`` as console lines: ``deployment/NAME: new``, ``service/NAME: unchanged``,
    ``deployment/NAME:`` and the diff indented under it, ``.../NAME: dry run failed: ...``."""
    return [line for found in dry_run(driver, artifacts, revision) for line in found.lines()]


def _one(driver: KubernetesDriver, manifest: dict[str, Any]) -> ObjectDiff:
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    ref = f"{kind.lower()}/{name}"
    try:
        live = driver.get_object(kind, name)  # None when there is none
        applied = driver.apply_object(manifest, dry_run=True)
    except DeployFailed as error:
        return ObjectDiff(ref, "failed", error=" ".join(str(error).split()))
    before = _as_yaml(live) if live is not None else []
    after = _as_yaml(applied)
    if before == after:
        return ObjectDiff(ref, "unchanged")
    origin = f"live/{ref}" if live is not None else "/dev/null"
    diff = difflib.unified_diff(before, after, origin, f"planned/{ref}", lineterm="")
    return ObjectDiff(ref, "new" if live is None else "changed", tuple(diff))


def without_server_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without what the API server sets by itself."""
    found = copy.deepcopy(dict(obj))
    found.pop("status", None)
    meta = found.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in SERVER_ANNOTATIONS:
        annotations.pop(key, None)
    if "annotations" in meta and not annotations:
        del meta["annotations"]
    return found


def _as_yaml(obj: Mapping[str, Any]) -> list[str]:
    text = yaml.safe_dump(
        without_server_fields(obj), sort_keys=True, default_flow_style=False, width=YAML_WIDTH
    )
    return text.splitlines()


# plan's section for one target -------------------------------------------------------------
@dataclass(frozen=True)
class ClusterPreview:
    """What ``deployer plan`` shows for one kubernetes target."""

    target: str
    namespace: str
    role: str  # the Role's YAML (rbac.role_manifests)
    source: str = ""  # where the dry run ran: "context 'aks' of ~/.kube/config"
    diffs: list[ObjectDiff] | None = None  # None: the dry run was skipped
    skipped: str = ""  # why it was skipped
    revision: str = ""

    def diff_file(self) -> str:
        """The dry run as a patch file (new objects in full, against /dev/null)."""
        lines = [
            f"# deployer plan, target {self.target}: server-side apply with dryRun=All of "
            f"revision {self.revision}, as {self.source}",
        ]
        for found in self.diffs or []:
            if found.state in ("changed", "new"):
                lines += found.diff
            else:
                lines.append(f"# {found.lines()[0]}")
        return "\n".join(lines) + "\n"


def subject_hint(settings: Config) -> str:
    if settings.context:
        return f"the user of kubeconfig context {settings.context!r}"
    return "the user of the kubeconfig's current context (or the pod's service account)"


def cluster_preview(
    config: DeployConfig,
    target: str,
    artifacts: Mapping[str, str],
    revision: str,
    session: Session | None,
) -> ClusterPreview:
    """The Role for ``target``, and the dry run of its apply where the cluster answers
    (``session`` None: the cluster is not asked, as offline)."""
    from deployer.targets.contract import TargetRef

    ref = TargetRef.of(config, target)
    settings = ref.settings
    if not isinstance(settings, Config):
        raise TypeError(f"target {target!r} is not a kubernetes target")
    base = ClusterPreview(
        target,
        settings.namespace,
        rbac.role_manifests(settings.namespace, subject_hint(settings)),
        revision=revision,
    )
    if session is None:
        return _skipped(base, "offline (--no-registry-check): the cluster was not asked")
    from deployer.targets.kubernetes.driver import connect

    try:
        driver = connect(ref, session)
    except DeployerError as error:
        return _skipped(base, str(error))
    try:
        diffs = dry_run(driver, artifacts, revision)
    except DeployerError as error:  # credentials refused (401)
        return _skipped(base, str(error))
    except driver.platform_errors as error:
        text = " ".join(str(error).split()) or type(error).__name__
        return _skipped(base, f"the cluster at {driver.cluster.host} did not answer: {text}")
    finally:
        driver.close()
    return replace(base, source=driver.cluster.source, diffs=diffs)


def _skipped(base: ClusterPreview, why: str) -> ClusterPreview:
    return replace(base, skipped=why)


def plan_lines(found: ClusterPreview, role_file: str, diff_file: str | None) -> list[str]:
    """``deployer plan``'s section for one kubernetes target."""
    lines = [
        f"{found.target}: RBAC: the Role the deploying identity needs in namespace "
        f"{found.namespace} ({role_file}):",
        *(f"  {line}" if line else "" for line in found.role.splitlines()),
    ]
    if found.diffs is None:
        lines.append(f"{found.target}: dry-run diff skipped: {found.skipped}")
        return lines
    where = f" ({diff_file})" if diff_file else ""
    lines.append(f"{found.target}: dry run of the apply (dryRun=All) as {found.source}{where}:")
    lines += [f"  {line}" for diff in found.diffs for line in diff.lines()]
    return lines
