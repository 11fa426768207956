"""The RBAC a ``kubernetes`` target's deploying identity needs: a namespaced Role granting
exactly the requests the driver sends (deploy, rollback, ``status``, ``logs``, ``down`` and
``plan``'s dry run), each rule with the reason for it, and a RoleBinding to fill in.

``deployer plan`` prints it for every kubernetes target. Nothing here talks to a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

ROLE_NAME = "deployer"


@dataclass(frozen=True)
class Rule:
    group: str  # the API group: "" is the core group
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str  # a comment above the rule in the Role


# Server-side apply is a PATCH; when it creates the object, RBAC checks create as well.
RULES: tuple[Rule, ...] = (
    Rule(
        "apps",
        ("deployments",),
        ("get", "list", "create", "patch", "delete"),
        "The service's Deployment and the candidate beside it: applied with server-side "
        "apply (patch; create when the apply makes one), the confirmed revision recorded "
        "(patch), the rollout watched (get), found by label by down (list), the candidate "
        "removed and down (delete).",
    ),
    Rule(
        "apps",
        ("replicasets",),
        ("get", "list"),
        "A rollback applies the pod template of the previous revision's ReplicaSet again, "
        "as kubectl rollout undo does (list; get reads nothing list does not).",
    ),
    Rule(
        "",
        ("pods",),
        ("get", "list"),
        "The new revision's pods: whether they are ready or stuck, whose logs to show, "
        "and that down's are gone (list; get reads nothing list does not).",
    ),
    Rule(
        "",
        ("pods/log",),
        ("get",),
        "deployer logs, and the last log lines of a pod that cannot start.",
    ),
    Rule(
        "",
        ("pods/proxy",),
        ("get", "create"),
        "The tests reach the candidate's pod through the API server's pod proxy (GET is "
        "get, POST is create).",
    ),
    Rule(
        "",
        ("services",),
        ("get", "list", "create", "patch", "delete"),
        "The Service: applied (patch, create), its address read (get), down (list, delete).",
    ),
    Rule(
        "",
        ("services/proxy",),
        ("get", "create"),
        "A ClusterIP (or NodePort) Service is tested through the API server's service "
        "proxy (GET is get, POST is create).",
    ),
    Rule(
        "autoscaling",
        ("horizontalpodautoscalers",),
        ("get", "list", "create", "patch", "delete"),
        "The HorizontalPodAutoscaler of targets with autoscale: applied (patch, create), "
        "removed when autoscale leaves deploy.yaml (get, delete), down (list, delete).",
    ),
    Rule(
        "",
        ("secrets",),
        ("get", "list", "create", "patch", "delete"),
        "The image pull secret made from the registry's credentials (pull_secret): applied "
        "(patch, create), down (get, list, delete). list (and get) can read every secret "
        "of the namespace: give deployer's services a namespace of their own.",
    ),
    Rule(
        "",
        ("events",),
        ("list",),
        "The events of a pod that cannot start (an image pull refused, no node with room), "
        "in the error and the report.",
    ),
)

# Cluster-scoped, so no Role can grant it, and optional: without it a NodePort Service is
# tested through the service proxy and reported at <node-address>.
NODES = Rule(
    "",
    ("nodes",),
    ("list",),
    "a NodePort Service's address is a node's, which listing nodes finds.",
)


def grants(rules: tuple[Rule, ...] = RULES) -> set[tuple[str, str, str]]:
    """Every (API group, resource, verb) the rules grant."""
    return {(r.group, res, verb) for r in rules for res in r.resources for verb in r.verbs}


def role_manifests(namespace: str, subject_hint: str) -> str:
    """The Role ``deployer`` in ``namespace`` as YAML (``kubectl apply -f`` takes it), and
    a RoleBinding, commented out, whose subject is to fill in (``subject_hint`` says whose:
    "the user of kubeconfig context 'aks-prod'")."""
    ns = json.dumps(namespace)
    lines = _comment(
        f"What deployer's deploying identity needs in namespace {namespace}: the requests of "
        "deployer deploy, status, logs, down and plan's dry run, and nothing more. Apply it "
        "(kubectl apply -f FILE), then bind it with the RoleBinding below. Check with: "
        f"kubectl auth can-i --list -n {namespace} --as SUBJECT",
        "# ",
    )
    lines += [
        "apiVersion: rbac.authorization.k8s.io/v1",
        "kind: Role",
        "metadata:",
        f"  name: {ROLE_NAME}",
        f"  namespace: {ns}",
        "rules:",
    ]
    for rule in RULES:
        lines += _comment(rule.why, "  # ")
        lines += [
            f"  - apiGroups: [{json.dumps(rule.group)}]",
            f"    resources: [{', '.join(json.dumps(r) for r in rule.resources)}]",
            f"    verbs: [{', '.join(json.dumps(v) for v in rule.verbs)}]",
        ]
    lines += ["# ---"]
    lines += _comment(
        f"Who deploys: {' '.join(subject_hint.split())}. Fill in the subject, uncomment "
        "the lines below, and apply.",
        "# # ",
    )
    lines += [
        "# apiVersion: rbac.authorization.k8s.io/v1",
        "# kind: RoleBinding",
        "# metadata:",
        f"#   name: {ROLE_NAME}",
        f"#   namespace: {ns}",
        "# roleRef:",
        "#   apiGroup: rbac.authorization.k8s.io",
        "#   kind: Role",
        f"#   name: {ROLE_NAME}",
        "# subjects:",
        "#   # A user or a group (AKS with Entra ID: its object id), or a service account",
        "#   # (kind: ServiceAccount, with its name and namespace, and no apiGroup).",
        "#   - kind: User",
        "#     apiGroup: rbac.authorization.k8s.io",
        "#     name: SUBJECT",
        "#",
    ]
    lines += _comment(
        f"Optional, and cluster-wide: {NODES.why} Nodes belong to no namespace, so only a "
        "ClusterRole (bound with a ClusterRoleBinding) can let deployer list them; without "
        "it, a NodePort Service is tested through the service proxy above and reported at "
        "<node-address>. The ClusterRole's rule:",
        "# ",
    )
    lines += [
        f"#   - apiGroups: [{json.dumps(NODES.group)}]",
        f"#     resources: [{', '.join(json.dumps(r) for r in NODES.resources)}]",
        f"#     verbs: [{', '.join(json.dumps(v) for v in NODES.verbs)}]",
    ]
    return "\n".join(lines) + "\n"


def _comment(text: str, prefix: str, width: int = 92) -> list[str]:
    """``text`` as comment lines of at most ``width`` characters, each starting ``prefix``."""
    return [prefix + line for line in _wrap(text, width - len(prefix))]


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines
