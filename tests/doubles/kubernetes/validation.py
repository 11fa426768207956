"""Admission: defaulting and validation of every object written, as kube-apiserver does them.

Validation uses the official OpenAPI schemas shipped offline by kubernetes-validate, strict
(unknown fields are errors), plus the few semantic rules a driver meets first: names, a
Deployment's selector matching its template and being immutable. Defaults are the ones a
driver sees echoed back (replicas, strategy, imagePullPolicy, protocol, clusterIP, ...).
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any

import jsonschema
import referencing
from kubernetes_validate import utils

from tests.doubles.kubernetes.kinds import KINDS, ApiError

KUBERNETES_VERSION = "1.33"  # the minor AKS runs by default
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035: Services
_cluster_ips = itertools.count(10)


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    version = [v for v in utils.all_versions() if utils.major_minor(v) <= KUBERNETES_VERSION][-1]
    directory = f"kubernetes-json-schema/v{version}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = utils.schema_contents(f"{directory}/{kind.lower()}-{group}.json", version)
    definitions = utils.schema_contents(f"{directory}/_definitions.json", version)
    registry = referencing.Registry()
    registry = referencing.Resource.from_contents(schema) @ registry
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def field_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def schema_causes(obj: dict) -> list[dict[str, str]]:
    causes = []
    validator = _validator(obj["kind"], obj["apiVersion"])
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path))):
        path = field_path(error.absolute_path)
        if error.validator == "additionalProperties":
            for extra in re.findall(r"'([^']+)' (?:was|were) unexpected", error.message) or [
                error.message
            ]:
                for name in re.findall(r"'([^']+)'", f"'{extra}'"):
                    field = f"{path}.{name}" if path else name
                    causes.append(_cause(field, f'unknown field "{field}"', "FieldValueInvalid"))
        elif error.validator == "required":
            name = re.findall(r"'([^']+)'", error.message)[0]
            field = f"{path}.{name}" if path else name
            causes.append(_cause(field, "Required value", "FieldValueRequired"))
        else:
            value = _show(error.instance)
            causes.append(_cause(path, f"Invalid value: {value}: {error.message}"))
    return causes


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def semantic_causes(obj: dict, old: dict | None) -> list[dict[str, str]]:
    causes = []
    meta, kind = obj.get("metadata", {}), obj.get("kind")
    name = meta.get("name", "")
    pattern = DNS_LABEL if kind == "Service" else DNS_SUBDOMAIN
    if not name:
        causes.append(_cause("metadata.name", "Required value: name or generateName is required",
                             "FieldValueRequired"))  # fmt: skip
    elif not pattern.match(name) or len(name) > 253:
        message = f'Invalid value: "{name}": a lowercase RFC 1123 name must consist of '
        causes.append(_cause("metadata.name", message + "lower case alphanumeric characters"))
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "ReplicaSet"):
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        wanted = (spec.get("selector") or {}).get("matchLabels") or {}
        if any(labels.get(k) != v for k, v in wanted.items()):
            causes.append(_cause("spec.template.metadata.labels",
                                 f"Invalid value: {_labels(labels)}: `selector` does not "
                                 "match template `labels`"))  # fmt: skip
        if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
            causes.append(_cause("spec.selector", f"Invalid value: {spec.get('selector')}: "
                                 "field is immutable"))  # fmt: skip
        if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
            causes.append(_cause("spec.replicas", f"Invalid value: {spec['replicas']}: must be "
                                 "greater than or equal to 0"))  # fmt: skip
    return causes


def _labels(labels: dict) -> str:
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in labels.items()) + "}"


def admit(obj: dict, old: dict | None) -> None:
    """Default ``obj`` in place, then validate it; raise a 422 Invalid ``ApiError``."""
    default(obj, old)
    try:
        causes = schema_causes(obj) + semantic_causes(obj, old)
    except FileNotFoundError:
        causes = []
    if not causes:
        return
    kind = KINDS[obj["kind"]]
    qualified = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
    name = obj.get("metadata", {}).get("name", "")
    texts = [f"{c['field']}: {c['message']}" for c in causes]
    text = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = {"name": name, "kind": kind.kind, "causes": causes}
    details |= {"group": kind.group} if kind.group else {}
    raise ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)


def default(obj: dict, old: dict | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    kind = obj.get("kind")
    if kind in ("Deployment", "ReplicaSet"):
        spec.setdefault("replicas", 1)
        if kind == "Deployment":
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {})
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                rolling.setdefault("maxSurge", "25%")
                rolling.setdefault("maxUnavailable", "25%")
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            _default_pod(template["spec"])
    elif kind == "Pod":
        _default_pod(spec)
    elif kind == "Service":
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
        if spec.get("clusterIP") in (None, "") and spec["type"] != "ExternalName":
            n = next(_cluster_ips)
            spec["clusterIP"] = old_ip or f"10.0.{n // 250}.{n % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))


def _default_pod(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
