"""The verbs on a resource path: get, list, watch, create, update, patch, delete, pod logs,
and the pods/services proxy (tests/doubles/kubernetes/proxy.py)."""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass
from typing import Any

import yaml

from tests.doubles.kubernetes import patch as patches
from tests.doubles.kubernetes import proxy
from tests.doubles.kubernetes.store import ApiError, Kind, not_found

APPLY, SMP = "application/apply-patch+yaml", "application/strategic-merge-patch+json"
MERGE, JSON_PATCH = "application/merge-patch+json", "application/json-patch+json"


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def parse(body: bytes, ctype: str) -> Any:
    try:
        return yaml.safe_load(body) if ctype == APPLY else json.loads(body or b"null")
    except (ValueError, yaml.YAMLError) as error:
        raise bad_request(f"the body of the request could not be decoded: {error}") from None


def selected(obj: dict, kind: Kind, namespace: str | None, query: dict[str, str]) -> bool:
    meta = obj.get("metadata", {})
    if obj.get("kind") != kind.kind or (namespace and meta.get("namespace") != namespace):
        return False
    try:
        fields = patches.field_selector_matches(query.get("fieldSelector", ""), obj)
    except patches.PatchError as error:
        raise bad_request(str(error)) from None
    labels = meta.get("labels") or {}
    return fields and patches.label_selector_matches(query.get("labelSelector", ""), labels)


@dataclass
class Call:
    h: Any  # the request handler
    verb: str
    query: dict[str, str]
    body: bytes
    ctype: str
    kind: Kind
    namespace: str | None
    name: str | None
    sub: str | None


def serve(call: Call) -> None:
    h, verb, query, body, ctype = call.h, call.verb, call.query, call.body, call.ctype
    kind, namespace, name, sub = call.kind, call.namespace, call.name, call.sub
    store = h.server.api.store
    agent = (h.headers.get("User-Agent") or "unknown").split("/")[0]
    manager = query.get("fieldManager") or agent
    dry_run = query.get("dryRun") == "All"
    if sub == "proxy" and kind.kind in ("Pod", "Service") and name:
        return proxy.serve(call)
    if sub not in (None, "status", "log") or (sub == "log" and kind.kind != "Pod"):
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
    if verb == "get" and sub == "log":
        return logs(call, store)
    if verb == "get":
        obj = store.get(kind.kind, namespace, name)
        if obj is None:
            raise not_found(kind, name)
        return h.answer(200, obj)
    if verb == "list":
        items = [
            {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
            for o in store.list(kind.kind, namespace) if selected(o, kind, namespace, query)
        ]  # fmt: skip
        meta = {"resourceVersion": store.resource_version}
        return h.answer(200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                              "metadata": meta, "items": items})  # fmt: skip
    if verb == "watch":
        return watch(call, store)
    if verb == "deletecollection":
        for obj in store.list(kind.kind, namespace):
            if selected(obj, kind, namespace, query):
                store.delete(kind.kind, namespace, obj["metadata"]["name"])
        return h.answer(200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                              "metadata": {}, "items": []})  # fmt: skip
    if verb == "delete":
        options = parse(body, "application/json") if body else {}
        policy = query.get("propagationPolicy") or (options or {}).get("propagationPolicy")
        obj = store.get(kind.kind, namespace, name)
        if obj is None:
            raise not_found(kind, name)
        if not dry_run:
            store.delete(kind.kind, namespace, name, policy or "Background")
        details = {"name": name, "kind": kind.plural, "uid": obj["metadata"]["uid"]}
        details |= {"group": kind.group} if kind.group else {}
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                  "details": details}  # fmt: skip
        return h.answer(200, obj if kind.kind == "Pod" else status)
    obj = parse(body, ctype)
    if verb in ("create", "update"):
        if not isinstance(obj, dict) or obj.get("kind") not in (None, kind.kind):
            raise bad_request(f"the kind in the data ({(obj or {}).get('kind')}) does not "
                              f"match the expected kind ({kind.kind})")  # fmt: skip
        obj["kind"] = kind.kind
        meta = obj.setdefault("metadata", {})
        check_scope(meta, namespace, name if verb == "update" else meta.get("name"))
        if verb == "create":
            return h.answer(201, store.create(obj, manager, dry_run=dry_run))
        return h.answer(200, store.replace(obj, manager, dry_run=dry_run, subresource=sub))
    return patch(call, store, obj, manager, dry_run)


def check_scope(meta: dict, namespace: str | None, name: str | None) -> None:
    if namespace is not None:
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")  # fmt: skip
        meta["namespace"] = namespace
    if name and meta.get("name") not in (None, "", name):
        raise bad_request(f"the name of the object ({meta.get('name')}) does not match the "
                          f"name on the URL ({name})")  # fmt: skip


def patch(call: Call, store: Any, obj: Any, manager: str, dry_run: bool) -> None:
    h, query, ctype = call.h, call.query, call.ctype
    kind, namespace, name, sub = call.kind, call.namespace, call.name, call.sub
    if ctype == APPLY:
        if not query.get("fieldManager"):
            required = "Required value: is required for apply patch"
            cause = {"reason": "FieldValueRequired", "field": "fieldManager", "message": required}
            raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                           + required, {"group": "meta.k8s.io", "kind": "PatchOptions",
                                        "causes": [cause]})  # fmt: skip
        if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
            raise bad_request("error decoding YAML: Object 'Kind' is missing in the apply patch")
        if obj.get("kind") != kind.kind or obj.get("apiVersion") != kind.api_version:
            raise bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not "
                              f"match the expected API version ({kind.api_version})")  # fmt: skip
        meta = obj.setdefault("metadata", {})
        check_scope(meta, namespace, name)
        keep = ("apiVersion", "kind", "metadata") + (("status",) if sub else ())
        obj = {k: v for k, v in obj.items() if k in keep or (not sub and k != "status")}
        existed = store.get(kind.kind, namespace, name) is not None
        force = query.get("force") == "true"
        result = store.apply(
            kind.kind, namespace, name, obj, manager, force=force, dry_run=dry_run, subresource=sub
        )
        return h.answer(200 if existed else 201, result)
    with store._writing():
        live = store.get(kind.kind, namespace, name)
        if live is None:
            raise not_found(kind, name)
        try:
            if ctype == MERGE:
                patched = patches.merge_patch(live, obj)
            elif ctype == SMP:
                patched = patches.strategic_merge_patch(live, obj)
            elif ctype == JSON_PATCH:
                patched = patches.json_patch(live, obj if isinstance(obj, list) else [])
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an "
                               f"unknown format - accepted media types include: {JSON_PATCH}, "
                               f"{MERGE}, {APPLY}, {SMP}", {})  # fmt: skip
        except patches.PatchError as error:
            raise ApiError(422, "Invalid", str(error), {}) from None
        if not isinstance(patched, dict):
            raise bad_request("the patch does not yield an object")
        if sub == "status":
            patched = live | {"status": patched.get("status", {})}
        patched.setdefault("metadata", {})["name"] = name
        patched["kind"] = kind.kind
        result = store.replace(patched, manager, dry_run=dry_run, subresource=sub)
    h.answer(200, result)


def logs(call: Call, store: Any) -> None:
    h, query, kind, namespace, name = call.h, call.query, call.kind, call.namespace, call.name
    if store.get("Pod", namespace, name) is None:
        raise not_found(kind, name)
    tail = int(query["tailLines"]) if query.get("tailLines") else None
    follow = query.get("follow") in ("true", "1")
    previous = query.get("previous") in ("true", "1")
    timestamps = query.get("timestamps") in ("true", "1")
    try:
        chunks = store.pod_logs(
            namespace, name, tail, follow, previous=previous, timestamps=timestamps
        )
    except LookupError as error:  # the container has not started (or never restarted)
        raise bad_request(str(error)) from None
    if not follow:
        return h.send(200, b"".join(chunks), "text/plain")
    h.start_stream("text/plain")
    for data in chunks:
        if h.server.api.closing.is_set():
            break
        if data:
            h.chunk(data)
    h.chunk(b"")
    h.close_connection = True


def watch(call: Call, store: Any) -> None:
    h, query, kind, namespace = call.h, call.query, call.kind, call.namespace
    since = query.get("resourceVersion")
    deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
    with store._lock:  # the listing and the subscription see the same instant
        if since in (None, "", "0"):
            initial = [(0, "ADDED", o) for o in store.list(kind.kind, namespace)]
            past, events = store.watch(None)
        else:
            initial = []
            try:
                past, events = store.watch(int(since))
            except ApiError as gone:
                past, events = gone.status(), None
    h.start_stream("application/json")

    def send(event: str, obj: Any) -> None:
        h.chunk(json.dumps({"type": event, "object": obj}).encode() + b"\n")

    try:
        if events is None:
            return send("ERROR", past)
        for _, event, obj in initial + past:
            if selected(obj, kind, namespace, query):
                send(event, obj)
        while not h.server.api.closing.is_set() and time.monotonic() < deadline:
            try:
                _, event, obj = events.get(timeout=min(0.5, max(deadline - time.monotonic(), 0)))
            except queue.Empty:
                continue
            if selected(obj, kind, namespace, query):
                send(event, obj)
    finally:
        if events is not None:
            store.unwatch(events)
        h.chunk(b"")
        h.close_connection = True
