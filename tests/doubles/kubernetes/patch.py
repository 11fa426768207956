"""PATCH bodies other than apply (JSON merge, strategic merge, JSON patch) and selectors."""

from __future__ import annotations

import copy
import re
from typing import Any

# Strategic merge keys (patchMergeKey) of the lists the served kinds have.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "imagePullSecrets": "name",
    "ownerReferences": "uid", "conditions": "type", "hostAliases": "ip",
}  # fmt: skip


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any, name: str = "") -> Any:
    """Kubernetes strategic merge patch: lists with a merge key are merged by it."""
    if isinstance(patch, list):
        key = _merge_key(name, patch)
        if key is None or not isinstance(target, list):
            return [p for p in copy.deepcopy(patch) if not _directive(p)]
        out = copy.deepcopy(target)
        for item in patch:
            index = next((i for i, t in enumerate(out) if t.get(key) == item.get(key)), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    del out[index]
            elif index is None:
                out.append({k: v for k, v in item.items() if not k.startswith("$")})
            else:
                out[index] = strategic_merge_patch(out[index], item)
        return out
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if not k.startswith("$")}
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # $setElementOrder/..., $retainKeys, $deleteFromPrimitiveList/...
        if value is None:
            out.pop(key, None)
        else:
            out[key] = strategic_merge_patch(out.get(key), value, key)
    return out


def _merge_key(name: str, patch: list) -> str | None:
    if not patch or not all(isinstance(p, dict) for p in patch):
        return None
    if name == "ports":
        return "containerPort" if "containerPort" in patch[0] else "port"
    return MERGE_KEYS.get(name)


def _directive(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"$patch"}


def json_patch(target: Any, operations: list[dict]) -> Any:
    """RFC 6902 JSON patch."""
    doc = copy.deepcopy(target)
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"testing value {path} failed")
        elif kind == "remove":
            _remove(doc, path)
        elif kind in ("add", "replace"):
            if kind == "replace":
                _get(doc, path)
                doc = _remove(doc, path) if path else doc
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get(doc, op["from"]))
            if kind == "move":
                _remove(doc, op["from"])
            doc = _add(doc, path, value)
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc


def _parts(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _get(doc: Any, path: str) -> Any:
    for part in _parts(path):
        try:
            doc = doc[int(part)] if isinstance(doc, list) else doc[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise PatchError(f"doc is missing path: {path!r}") from None
    return doc


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _parts(path)
    if not parts:
        return value
    parent = _get(doc, "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts[:-1]))
    last = parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError(f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _parts(path)
    parent = _get(doc, "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts[:-1]))
    try:
        del parent[int(parts[-1]) if isinstance(parent, list) else parts[-1]]
    except (KeyError, IndexError, ValueError):
        raise PatchError(f"doc is missing path: {path!r}") from None
    return doc


# Selectors ----------------------------------------------------------------------------------
def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for raw in re.split(r",(?![^()]*\))", selector or ""):
        term = raw.strip()
        if not term:
            continue
        if m := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\((.*)\)", term):
            values = {v.strip() for v in m[3].split(",")}
            if (labels.get(m[1]) in values) != (m[2] == "in"):
                return False
        elif m := re.fullmatch(r"([^\s!=]+)\s*(==|=|!=)\s*(\S*)", term):
            if (labels.get(m[1]) == m[3]) != (m[2] != "!="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_selector_matches(selector: str, obj: dict) -> bool:
    for term in (selector or "").split(","):
        if not term.strip():
            continue
        m = re.fullmatch(r"\s*([^!=\s]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise PatchError(f"invalid field selector: {term!r}")
        value: Any = obj
        for part in m[1].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if (str(value if value is not None else "") == m[3]) != (m[2] != "!="):
            return False
    return True
