"""Server-side apply and field ownership (``metadata.managedFields``, fieldsType FieldsV1).

A field set is a set of paths; a path is a tuple of FieldsV1 elements: ``f:<field>``,
``k:<json key of an associative-list element>``, ``v:<json value of a set element>``. The
path of an associative-list element stands for the element itself (FieldsV1's ``"."``).
Lists are merged as the Kubernetes schemas declare them for the kinds served here
(containers by name, container ports by containerPort and protocol, ...); other lists and
label selectors are atomic, replaced whole.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.doubles.kubernetes.kinds import ApiError, now

MISSING: Any = object()
SKIP_METADATA = {
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "managedFields", "deletionTimestamp", "selfLink", "generateName",
}  # fmt: skip
LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "initContainers": ("name",), "ephemeralContainers": ("name",),
    "env": ("name",), "volumes": ("name",), "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",), "ownerReferences": ("uid",), "conditions": ("type",),
    "volumeDevices": ("devicePath",), "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}  # fmt: skip
SETS = {"finalizers"}
ATOMIC_MAPS = {"selector"}  # LabelSelector (Deployment, ReplicaSet) and Service's selector
Path = tuple[str, ...]


def list_keys(name: str, value: list) -> tuple[str, ...] | str | None:
    if name in SETS:
        return "set"
    if name == "ports" and value and all(isinstance(e, dict) for e in value):
        if all("containerPort" in e for e in value):
            return ("containerPort", "protocol")
        if all("port" in e for e in value):
            return ("port", "protocol")
    return LIST_KEYS.get(name)


def element_key(element: dict, keys: tuple[str, ...]) -> str:
    key = {k: element.get(k, "TCP" if k == "protocol" else None) for k in keys}
    return "k:" + json.dumps(key, separators=(",", ":"), sort_keys=True)


def fields_of(obj: dict | None, status: bool = False) -> set[Path]:
    """The field set of an object's spec and metadata (or of its status)."""
    out: set[Path] = set()
    for key, value in (obj or {}).items():
        if key in ("apiVersion", "kind") or (key == "status") != status:
            continue
        if key == "metadata":
            kept = {k: v for k, v in value.items() if k not in SKIP_METADATA}
            if kept:
                _walk(kept, (f"f:{key}",), key, out)
            continue
        _walk(value, (f"f:{key}",), key, out)
    return out


def _walk(value: Any, path: Path, name: str, out: set[Path]) -> None:
    if isinstance(value, dict) and value and name not in ATOMIC_MAPS:
        for key, item in value.items():
            _walk(item, (*path, f"f:{key}"), key, out)
    elif isinstance(value, list) and (keys := list_keys(name, value)) is not None:
        for element in value:
            if keys == "set":
                out.add((*path, "v:" + json.dumps(element, separators=(",", ":"))))
                continue
            element_path = (*path, element_key(element, keys))  # type: ignore[arg-type]
            out.add(element_path)
            for key, item in element.items():
                _walk(item, (*element_path, f"f:{key}"), key, out)
    else:
        out.add(path)


def get_path(obj: Any, path: Path) -> Any:
    for part in path:
        obj = _child(obj, part)
        if obj is MISSING:
            return MISSING
    return obj


def _child(obj: Any, part: str) -> Any:
    kind, text = part[:2], part[2:]
    if kind == "f:":
        return obj.get(text, MISSING) if isinstance(obj, dict) else MISSING
    if not isinstance(obj, list):
        return MISSING
    wanted = json.loads(text)
    for element in obj:
        if kind == "v:" and element == wanted:
            return element
        if (
            kind == "k:"
            and isinstance(element, dict)
            and element_key(element, tuple(wanted)) == part
        ):
            return element
    return MISSING


def remove_path(obj: dict, path: Path) -> None:
    parent = get_path(obj, path[:-1])
    last = path[-1]
    if isinstance(parent, dict) and last.startswith("f:"):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        target = _child(parent, last)
        if target is not MISSING:
            parent.remove(target)


def merge(live: Any, config: Any, name: str = "") -> Any:
    """Overlay an applied configuration on the live object."""
    if isinstance(live, dict) and isinstance(config, dict) and name not in ATOMIC_MAPS:
        out = dict(live)
        for key, value in config.items():
            out[key] = merge(live.get(key, MISSING), value, key)
        return out
    if isinstance(live, list) and isinstance(config, list):
        keys = list_keys(name, config)
        if keys == "set":
            return live + [v for v in config if v not in live]
        if isinstance(keys, tuple):
            out = list(live)
            for element in config:
                match = _child(out, element_key(element, keys))
                if match is MISSING:
                    out.append(copy.deepcopy(element))
                else:
                    out[out.index(match)] = merge(match, element)
            return out
    return copy.deepcopy(config)


# managedFields ------------------------------------------------------------------------------
def to_fields_v1(paths: set[Path]) -> dict:
    tree: dict = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    for path in paths:
        node = tree
        for part in path:
            node = node[part]
        if node and "." not in node:
            children = dict(node)
            node.clear()
            node["."] = {}
            node.update(children)
    return tree


def from_fields_v1(tree: dict, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for part, node in tree.items():
        if part == ".":
            out.add(prefix)
        elif not node:
            out.add((*prefix, part))
        else:
            out |= from_fields_v1(node, (*prefix, part))
    return out


def _entries(managed: list[dict]) -> list[tuple[dict, set[Path]]]:
    return [(dict(e), from_fields_v1(e.get("fieldsV1") or {})) for e in managed or []]


def _render(entries: list[tuple[dict, set[Path]]]) -> list[dict]:
    return [e | {"fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(p)} for e, p in entries if p]


def _entry(manager: str, operation: str, api_version: str, subresource: str | None) -> dict:
    entry = {"manager": manager, "operation": operation, "apiVersion": api_version}
    return entry | {"time": now()} | ({"subresource": subresource} if subresource else {})


def _is(entry: dict, manager: str, operation: str, subresource: str | None) -> bool:
    same = (entry.get("manager"), entry.get("operation"), entry.get("subresource"))
    return same == (manager, operation, subresource)


def record_update(
    old: dict, new: dict, managed: list[dict], manager: str, api_version: str, *,
    subresource: str | None = None,
) -> list[dict]:  # fmt: skip
    """An Update (create, PUT, PATCH) takes the fields it changed from their owners."""
    status = subresource == "status"
    old_fields, new_fields = fields_of(old, status), fields_of(new, status)
    changed = {
        p for p in new_fields
        if get_path(old, p) is MISSING or (not p[-1].startswith("k:") and
                                           get_path(old, p) != get_path(new, p))
    }  # fmt: skip
    removed = old_fields - new_fields
    entries = [(e, p - removed - changed) for e, p in _entries(managed)]
    mine = next((i for i, (e, _) in enumerate(entries) if _is(e, manager, "Update", subresource)),
                None)  # fmt: skip
    if changed:
        previous = entries.pop(mine)[1] if mine is not None else set()
        entries.append((_entry(manager, "Update", api_version, subresource), previous | changed))
    return _render(entries)


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        if part.startswith("f:"):
            text += "." + part[2:]
        else:
            key = json.loads(part[2:])
            if isinstance(key, dict):
                text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
            else:
                text += f"[={json.dumps(key)}]"
    return text


def server_side_apply(
    live: dict | None, config: dict, manager: str, api_version: str, *, force: bool,
    subresource: str | None = None,
) -> tuple[dict, list[dict]]:  # fmt: skip
    """Merge an applied configuration into the live object; return it and its managedFields.
    Raises a 409 Conflict (``ApiError``) when another manager owns a field with another value
    and ``force`` is false."""
    status = subresource == "status"
    live = copy.deepcopy(live) if live is not None else {"metadata": {}}
    applied = fields_of(config, status)
    entries = _entries(live.get("metadata", {}).get("managedFields", []))
    previous: set[Path] = set()
    others: list[tuple[dict, set[Path]]] = []
    for entry, paths in entries:
        if _is(entry, manager, "Apply", subresource):
            previous = paths
        else:
            others.append((entry, paths))
    conflicts = [
        (entry, p) for entry, paths in others for p in sorted(applied & paths)
        if not p[-1].startswith("k:") and get_path(live, p) != get_path(config, p)
    ]  # fmt: skip
    if conflicts and not force:
        raise _conflict_error(ApiError, conflicts)
    lost = {p for _, p in conflicts}
    others = [(e, p - lost) for e, p in others]
    owned_by_others = set().union(*(p for _, p in others))
    merged = merge(live, {k: v for k, v in config.items() if k not in ("apiVersion", "kind")})
    for path in sorted(previous - applied - owned_by_others, key=len, reverse=True):
        if path[-1].startswith("k:") and any(p[: len(path)] == path for p in owned_by_others):
            continue
        remove_path(merged, path)
        _prune(merged, path[:-1], owned_by_others | applied)
    mine = (_entry(manager, "Apply", api_version, subresource), applied)
    return merged, _render([*others, mine])


def _prune(obj: dict, path: Path, owned: set[Path]) -> None:
    while path and path[-1].startswith("f:") and path not in owned:
        value = get_path(obj, path)
        if value not in ({}, []):
            return
        remove_path(obj, path)
        path = path[:-1]


def _conflict_error(api_error: type, conflicts: list[tuple[dict, Path]]) -> Exception:
    def who(entry: dict) -> str:
        name = json.dumps(entry.get("manager", ""))
        return f"{name} using {entry['apiVersion']}" if entry.get("operation") == "Update" else name

    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {who(e)}",
         "field": format_path(p)}
        for e, p in conflicts
    ]  # fmt: skip
    count = len(conflicts)
    if count == 1:
        text = f"conflict with {who(conflicts[0][0])}: {format_path(conflicts[0][1])}"
    else:
        by: dict[str, list[str]] = {}
        for entry, path in conflicts:
            by.setdefault(who(entry), []).append(format_path(path))
        text = "\n".join(
            f"conflicts with {w}:\n" + "\n".join(f"- {p}" for p in paths) for w, paths in by.items()
        )
    message = f"Apply failed with {count} conflict{'s' if count > 1 else ''}: {text}"
    return api_error(409, "Conflict", message, {"causes": causes})
