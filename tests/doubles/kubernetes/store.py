"""The API server's storage: objects as the API serves them, resourceVersions, events, GC.

Thread-safe. Every write bumps one global resourceVersion counter (a string on the wire),
records an event for watches, and calls subscribers outside the lock. Errors are raised as
``ApiError``, which the HTTP server turns into a ``Status`` body.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator

from tests.doubles.kubernetes import apply, nodes, validation
from tests.doubles.kubernetes.kinds import KINDS, ApiError, Kind, kind_of, not_found, now

__all__ = ["KINDS", "ApiError", "Kind", "Store", "kind_of", "not_found", "now"]


def matches(obj: dict, selector: dict[str, str] | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


class Store:
    def __init__(
        self,
        namespaces: tuple[str, ...] = ("default", "ml", "kube-system"),
        node: str | None = nodes.NODE_NAME,
    ) -> None:
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str | None, str], dict] = {}
        self._rv = 0
        self.history: deque[tuple[int, str, dict]] = deque(maxlen=20000)
        self._subscribers: list[Callable[[str, dict], None]] = []
        self._watchers: list[queue.Queue] = []
        self._local = threading.local()
        # (namespace, pod, tailLines, follow, previous) -> the container's output
        self.log_provider: Callable[..., Iterator[bytes]] | None = None
        for ns in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, "kube")
        if node:
            self.create(nodes.node(node), "kubelet")

    # Reads ----------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        with self._lock:
            obj = self._objects.get(self._key(kind, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, kind: str, namespace: str | None = None, selector: dict[str, str] | None = None
    ) -> list[dict]:
        with self._lock:
            found = [
                copy.deepcopy(o)
                for (k, ns, _), o in sorted(self._objects.items(), key=lambda i: str(i[0]))
                if k == kind and (namespace is None or ns == namespace) and matches(o, selector)
            ]
        return found

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    # Writes ---------------------------------------------------------------------------------
    def create(self, obj: dict, manager: str, *, dry_run: bool = False) -> dict:
        obj = copy.deepcopy(obj)
        kind = kind_of(obj.get("kind", ""))
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"] = kind.api_version
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        with self._writing():
            namespace = self._namespace_of(kind, meta)
            key = self._key(kind.kind, namespace, meta.get("name", ""))
            if key in self._objects:
                raise ApiError(409, "AlreadyExists",
                               f'{kind.resource} "{key[2]}" already exists',
                               {"name": key[2], "kind": kind.plural}
                               | ({"group": kind.group} if kind.group else {}))  # fmt: skip
            for field in ("resourceVersion", "uid", "managedFields", "deletionTimestamp"):
                meta.pop(field, None)
            validation.admit(obj, None)
            meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": now()}
            if "spec" in obj or kind.kind in ("Deployment", "ReplicaSet"):
                meta["generation"] = 1
            meta["managedFields"] = apply.record_update({}, obj, [], manager, kind.api_version)
            if dry_run:
                return obj
            return self._write("ADDED", key, obj)

    def replace(
        self, obj: dict, manager: str, *, dry_run: bool = False, subresource: str | None = None
    ) -> dict:
        """PUT: the whole object; a stale metadata.resourceVersion is a 409 Conflict."""
        obj = copy.deepcopy(obj)
        kind = kind_of(obj.get("kind", ""))
        meta = obj.setdefault("metadata", {})
        with self._writing():
            namespace = self._namespace_of(kind, meta)
            key = self._key(kind.kind, namespace, meta.get("name", ""))
            old = self._objects.get(key)
            if old is None:
                raise not_found(kind, key[2])
            sent_rv = meta.get("resourceVersion")
            if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on {kind.resource} "{key[2]}": the object '
                    "has been modified; please apply your changes to the latest version and "
                    "try again",
                    {"name": key[2], "kind": kind.plural}
                    | ({"group": kind.group} if kind.group else {}),
                )  # fmt: skip
            if subresource == "status":
                new = copy.deepcopy(old)
                new["status"] = obj.get("status", {})
            else:
                new = obj
                new["apiVersion"] = kind.api_version
                if kind.status and "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                validation.admit(new, old)
            return self._finish_update(key, old, new, (manager, dry_run, subresource))

    def update_status(self, kind: str, namespace: str | None, name: str, status: dict) -> dict:
        with self._writing():
            key = self._key(kind, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise not_found(kind_of(kind), name)
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(status)
            return self._write("MODIFIED", key, new)

    def apply(
        self, kind: str, namespace: str | None, name: str, config: dict, manager: str, *,
        force: bool = False, dry_run: bool = False, subresource: str | None = None,
    ) -> dict:  # fmt: skip
        """Server-side apply (creates the object when it is missing)."""
        k = kind_of(kind)
        with self._writing():
            key = self._key(kind, namespace, name)
            if k.namespaced:
                self._namespace_of(k, {"namespace": namespace})
            old = self._objects.get(key)
            merged, managed = apply.server_side_apply(
                old, config, manager, k.api_version, force=force, subresource=subresource
            )
            merged["apiVersion"], merged["kind"] = k.api_version, kind
            meta = merged["metadata"]
            meta["name"] = name
            if k.namespaced:
                meta["namespace"] = namespace
            if old is None:
                merged["metadata"]["managedFields"] = []
                created = self.create(merged, manager, dry_run=True)
                created["metadata"]["managedFields"] = managed
                return created if dry_run else self._write("ADDED", key, created)
            validation.admit(merged, old)
            meta["managedFields"] = managed
            return self._finish_update(key, old, merged, (None, dry_run, subresource))

    def delete(
        self, kind: str, namespace: str | None, name: str, propagation: str = "Background"
    ) -> dict | None:
        """Delete an object; its dependents (by ownerReferences) are garbage-collected, or
        orphaned with ``propagation="Orphan"``. A namespace takes its objects with it."""
        with self._writing():
            key = self._key(kind, namespace, name)
            obj = self._objects.get(key)
            if obj is None:
                return None
            uid = obj["metadata"]["uid"]
            deleted = self._write("DELETED", key, obj, remove=True)
            for (k, ns, n), other in list(self._objects.items()):
                owners = other["metadata"].get("ownerReferences") or []
                owned = any(ref.get("uid") == uid for ref in owners)
                if kind == "Namespace" and ns == name:
                    self.delete(k, ns, n, propagation)
                elif owned and propagation == "Orphan":
                    orphan = copy.deepcopy(other)
                    orphan["metadata"]["ownerReferences"] = [
                        r for r in owners if r.get("uid") != uid
                    ] or None
                    if orphan["metadata"]["ownerReferences"] is None:
                        del orphan["metadata"]["ownerReferences"]
                    self._write("MODIFIED", (k, ns, n), orphan)
                elif owned:
                    self.delete(k, ns, n, propagation)
            return deleted

    def subscribe(self, callback: Callable[[str, dict], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def pod_logs(
        self,
        namespace: str,
        name: str,
        tail_lines: int | None = None,
        follow: bool = False,
        *,
        previous: bool = False,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        """The pod's container output (none without a controller); raises LookupError when
        the container has not started (the API server's 400)."""
        if self.log_provider is None:
            return iter(())
        return self.log_provider(namespace, name, tail_lines, follow, previous, timestamps)

    # Watches (used by the server) -----------------------------------------------------------
    def watch(self, since: int | None) -> tuple[list[tuple[int, str, dict]], queue.Queue]:
        """Events after resourceVersion ``since`` (None: none) and a queue of the next ones.
        Raises ApiError 410 Gone when ``since`` is older than the kept history."""
        with self._lock:
            if since is not None and since < self._rv:
                oldest = self.history[0][0] if self.history else self._rv + 1
                if since + 1 < oldest:
                    message = f"too old resource version: {since} ({self._rv})"
                    raise ApiError(410, "Expired", message)
            past = [e for e in self.history if since is not None and e[0] > since]
            q: queue.Queue = queue.Queue()
            self._watchers.append(q)
            return [(rv, t, copy.deepcopy(o)) for rv, t, o in past], q

    def unwatch(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self._watchers:
                self._watchers.remove(q)

    # Internals ------------------------------------------------------------------------------
    def _finish_update(self, key: tuple, old: dict, new: dict, how: tuple) -> dict:
        (manager, dry_run, subresource), kind = how, kind_of(key[0])
        meta, old_meta = new["metadata"], old["metadata"]
        for field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if manager is not None:
            meta["managedFields"] = apply.record_update(
                old, new, old_meta.get("managedFields", []), manager, kind.api_version,
                subresource=subresource,
            )  # fmt: skip
        if new.get("spec") != old.get("spec") and "generation" in meta:
            meta["generation"] += 1
        if new == old or dry_run:
            return copy.deepcopy(new)
        return self._write("MODIFIED", key, new)

    def _write(self, event: str, key: tuple, obj: dict, remove: bool = False) -> dict:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if remove:
            del self._objects[key]
        else:
            self._objects[key] = obj
        snapshot = copy.deepcopy(obj)
        self.history.append((self._rv, event, snapshot))
        for q in self._watchers:
            q.put((self._rv, event, snapshot))
        self._local.pending.append((event, snapshot))
        return copy.deepcopy(obj)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The store lock; subscribers are called once the outermost write released it."""
        local = self._local
        if not hasattr(local, "depth"):
            local.depth, local.pending = 0, []
        with self._lock:
            local.depth += 1
            try:
                yield
            finally:
                local.depth -= 1
        if local.depth == 0:
            pending, local.pending = local.pending, []
            for event, obj in pending:
                for callback in list(self._subscribers):
                    callback(event, copy.deepcopy(obj))

    def _namespace_of(self, kind: Kind, meta: dict) -> str | None:
        if not kind.namespaced:
            meta.pop("namespace", None)
            return None
        namespace = meta.get("namespace") or "default"
        meta["namespace"] = namespace
        if ("Namespace", None, namespace) not in self._objects:
            raise not_found(KINDS["Namespace"], namespace)
        return namespace

    @staticmethod
    def _key(kind: str, namespace: str | None, name: str) -> tuple[str, str | None, str]:
        return (kind, namespace if kind_of(kind).namespaced else None, name)
