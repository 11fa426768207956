"""The IoT Edge agent's reading of a deployment manifest: each custom module's image, desired
status, restart policy, startup order, environment and createOptions (the chunks
``createOptions``, ``createOptions01``, ... joined in order and parsed), the registry
credentials and edgeHub's routes (``read_manifest``), and what a real device would fail on
(``problems``). ``deployer.targets.iot_edge.engine`` runs what is read here.

- Registry credentials: the image's registry is its first path component when that holds a
  '.' or a ':' (else Docker Hub, ``https://index.docker.io/v1/``), matched against each
  ``registryCredentials`` address exactly, ignoring case (``FirstAuthConfig``). A single
  component image (``python:3.11``) is a Docker Hub library image, pulled anonymously.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from deployer.errors import UserError
from deployer.targets.iot_edge.render import (
    CREATE_OPTIONS_CHUNK_CHARS,
    CREATE_OPTIONS_MAX_CHUNKS,
    EDGE_HUB_PORTS,
)

Status = Literal["running", "stopped"]
RestartPolicy = Literal["always", "on-failure", "on-unhealthy", "never"]

STATUSES: tuple[Status, ...] = ("running", "stopped")
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("never", "on-failure", "on-unhealthy", "always")
SYSTEM_MODULES = ("edgeAgent", "edgeHub")
# The agent's defaults for a module that leaves them out (Agent.Core Constants).
DEFAULT_RESTART_POLICY: RestartPolicy = "on-unhealthy"
DEFAULT_STARTUP_ORDER = 4_294_967_295  # uint.MaxValue: started after every ordered module

DOCKER_HUB_ADDRESS = "https://index.docker.io/v1/"
# Microsoft's registry serves the runtime and its public modules without credentials.
PUBLIC_REGISTRIES = ("mcr.microsoft.com",)

_CHUNK_KEY = re.compile(r"^createOptions(\d\d)?$")


class ManifestError(UserError):
    """The manifest is not one the edge agent can apply; the message says where and why."""


@dataclass(frozen=True)
class EdgeModule:
    name: str
    image: str
    status: Status
    restart_policy: RestartPolicy
    env: dict[str, str]
    create_options: dict[str, Any]
    startup_order: int
    system: bool
    image_pull_policy: Literal["on-create", "never"] = "on-create"


@dataclass(frozen=True)
class EdgeManifest:
    modules: dict[str, EdgeModule]  # the custom modules, by name
    system_modules: dict[str, EdgeModule]  # edgeAgent and edgeHub
    registry_credentials: dict[str, dict[str, str]]  # name -> {address, username, password}
    routes: dict[str, str]  # name -> "FROM ... INTO ..."
    raw: dict[str, Any]  # the modulesContent


# Reading a manifest ----------------------------------------------------------------------


def read_manifest(document: Mapping[str, Any] | str) -> EdgeManifest:
    """A manifest as the edge agent reads it.

    ``document`` is what deployer renders: ``{"modulesContent": ...}`` for one device, an
    IoT Hub configuration ``{"id": ..., "content": {"modulesContent": ...}}`` at scale, or
    the modulesContent itself; as a mapping or as JSON text.
    """
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise ManifestError(f"the deployment manifest is not valid JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise ManifestError("the deployment manifest is not a JSON object")
    content = _modules_content(document)
    agent = _desired(content, "$edgeAgent")
    hub = _desired(content, "$edgeHub", required=False)
    system = _object(agent.get("systemModules", {}), "$edgeAgent systemModules")
    custom = _object(agent.get("modules", {}), "$edgeAgent modules")
    runtime = _object(agent.get("runtime", {}), "$edgeAgent runtime")
    settings = _object(runtime.get("settings", {}), "$edgeAgent runtime.settings")
    return EdgeManifest(
        modules={name: _module(name, spec, system=False) for name, spec in custom.items()},
        system_modules={name: _module(name, spec, system=True) for name, spec in system.items()},
        registry_credentials=_credentials(settings.get("registryCredentials", {})),
        routes=_routes(hub.get("routes", {})),
        raw=dict(content),
    )


def _modules_content(document: Mapping[str, Any]) -> Mapping[str, Any]:
    if "$edgeAgent" in document:
        return document
    if "modulesContent" in document:
        return _object(document["modulesContent"], "modulesContent")
    content = document.get("content")
    if isinstance(content, Mapping) and "modulesContent" in content:
        return _object(content["modulesContent"], "content.modulesContent")
    raise ManifestError(
        'not an IoT Edge deployment manifest: expected {"modulesContent": ...}, an IoT Hub '
        "configuration with content.modulesContent, or a modulesContent with $edgeAgent"
    )


def _desired(content: Mapping[str, Any], twin: str, *, required: bool = True) -> dict[str, Any]:
    section = content.get(twin)
    if section is None and not required:
        return {}
    section = _object(section, twin)
    return _object(section.get("properties.desired"), f"{twin} properties.desired")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ManifestError(f"{where}: expected a JSON object, got {_json_type(value)}")
    return dict(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "nothing"
    return {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}.get(
        type(value), "a number"
    )


def _module(name: str, spec: Any, *, system: bool) -> EdgeModule:
    where = f"module {name}"
    spec = _object(spec, where)
    settings = _object(spec.get("settings", {}), f"{where}: settings")
    image = settings.get("image")
    if not isinstance(image, str) or not image.strip():
        raise ManifestError(f"{where}: settings.image is missing: every module names its image")
    status = spec.get("status", "running")
    if status not in STATUSES:
        raise ManifestError(f"{where}: status is {status!r}; it is 'running' or 'stopped'")
    policy = spec.get("restartPolicy", DEFAULT_RESTART_POLICY)
    if policy not in RESTART_POLICIES:
        raise ManifestError(
            f"{where}: restartPolicy is {policy!r}; it is one of {', '.join(RESTART_POLICIES)}"
        )
    order = spec.get("startupOrder", DEFAULT_STARTUP_ORDER)
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ManifestError(f"{where}: startupOrder is {order!r}; it is a whole number >= 0")
    pull = spec.get("imagePullPolicy", "on-create")
    if pull not in ("on-create", "never"):
        raise ManifestError(f"{where}: imagePullPolicy is {pull!r}; it is 'on-create' or 'never'")
    return EdgeModule(
        name=name,
        image=image,
        status=status,
        restart_policy=policy,
        env=_env(spec.get("env", {}), where),
        create_options=_create_options(settings, where),
        startup_order=order,
        system=system,
        image_pull_policy=pull,
    )


def _env(env: Any, where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, entry in _object(env, f"{where}: env").items():
        if not isinstance(entry, Mapping) or "value" not in entry:
            raise ManifestError(f'{where}: env.{name} must be {{"value": ...}}')
        value = entry["value"]
        if isinstance(value, bool):
            values[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            values[name] = str(value)
        else:
            raise ManifestError(
                f"{where}: env.{name}.value must be a string, a number or a boolean, "
                f"not {_json_type(value)}"
            )
    return values


def join_create_options(settings: Mapping[str, str]) -> str:
    """The createOptions of a module's ``settings``, as the agent joins them: ``createOptions``
    then ``createOptions01``, ``createOptions02``... in order, with no gap, each at most 512
    characters (a twin value's limit), at most 8 of them. "" when there are none."""
    chunks: dict[int, str] = {}
    for key, value in settings.items():
        match = _CHUNK_KEY.match(key)
        if key.startswith("createOptions") and match is None:
            raise ManifestError(
                f"settings.{key}: not a createOptions chunk; chunks are named createOptions, "
                "createOptions01, createOptions02, ... (two digits)"
            )
        if match is None:
            continue
        if not isinstance(value, str):
            raise ManifestError(
                f"settings.{key} is {_json_type(value)}: the manifest carries createOptions as "
                "a string of JSON (stringified), not as JSON itself"
            )
        if len(value) > CREATE_OPTIONS_CHUNK_CHARS:
            raise ManifestError(
                f"settings.{key} is {len(value)} characters; a chunk holds at most "
                f"{CREATE_OPTIONS_CHUNK_CHARS} (a twin value's limit): split it into "
                "createOptions01, createOptions02, ..."
            )
        chunks[int(match[1] or 0)] = value
    if not chunks:
        return ""
    if len(chunks) > CREATE_OPTIONS_MAX_CHUNKS:
        raise ManifestError(
            f"createOptions come in {len(chunks)} chunks; at most {CREATE_OPTIONS_MAX_CHUNKS} "
            f"({CREATE_OPTIONS_MAX_CHUNKS * CREATE_OPTIONS_CHUNK_CHARS} characters) are read: "
            "move what is large (a configuration file) into a bind mount or the image"
        )
    expected = list(range(len(chunks)))
    if sorted(chunks) != expected:
        names = ", ".join(_chunk_name(i) for i in sorted(chunks))
        missing = ", ".join(_chunk_name(i) for i in range(max(chunks) + 1) if i not in chunks)
        raise ManifestError(
            f"createOptions chunks out of order or with a gap: {names} (missing {missing}); "
            "the agent joins createOptions, createOptions01, createOptions02, ... with no gap"
        )
    return "".join(chunks[i] for i in expected)


def _chunk_name(index: int) -> str:
    return "createOptions" if index == 0 else f"createOptions{index:02d}"


def _create_options(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    try:
        joined = join_create_options(settings)
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if not joined:
        return {}
    try:
        options = json.loads(joined)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"{where}: createOptions are not valid JSON: {exc.msg} at character {exc.pos + 1}"
            f"{_chunk_position(settings, exc.pos)}: ...{joined[max(0, exc.pos - 30) : exc.pos]}"
            f"<here>{joined[exc.pos : exc.pos + 30]}..."
        ) from None
    if not isinstance(options, dict):
        raise ManifestError(
            f"{where}: createOptions are {_json_type(options)}; they are a JSON object (Docker's "
            "container create options: HostConfig, ExposedPorts, Env, Labels...)"
        )
    return options


def _chunk_position(settings: Mapping[str, Any], position: int) -> str:
    """Which chunk, and where in it, a character of the joined createOptions came from (""
    when they came in one)."""
    keys = sorted((k for k in settings if _CHUNK_KEY.match(k)), key=lambda k: int(k[13:] or 0))
    if len(keys) < 2:
        return ""
    start = 0
    for key in keys:
        length = len(settings[key])
        if position < start + length or key == keys[-1]:
            return f" ({key}, character {position - start + 1})"
        start += length
    return ""


def _credentials(value: Any) -> dict[str, dict[str, str]]:
    credentials: dict[str, dict[str, str]] = {}
    for name, value_of_name in _object(
        value, "$edgeAgent runtime.settings.registryCredentials"
    ).items():
        where = f"registryCredentials.{name}"
        entry = _object(value_of_name, where)
        missing = [k for k in ("address", "username", "password") if not entry.get(k)]
        if missing:
            raise ManifestError(f"{where}: {', '.join(missing)} missing")
        credentials[name] = {k: str(entry[k]) for k in ("address", "username", "password")}
    return credentials


def _routes(value: Any) -> dict[str, str]:
    routes: dict[str, str] = {}
    for name, route in _object(value, "$edgeHub routes").items():
        # edgeHub schema 1.1+ also allows {"route": ..., "priority": ..., "timeToLiveSecs": ...}
        text = route.get("route") if isinstance(route, Mapping) else route
        if not isinstance(text, str):
            raise ManifestError(f"$edgeHub routes.{name}: expected a route string")
        routes[name] = text
    return routes


# What a device would fail on -------------------------------------------------------------

_ROUTE_SOURCE = re.compile(r"\bFROM\s+/messages/modules/([^/\s]+)/")
_ROUTE_SINK = re.compile(r'BrokeredEndpoint\(\s*"/modules/([^/"]+)/inputs/')


def registry_of(image: str) -> str | None:
    """The registry address the agent looks registry credentials up by, as its
    ``TryParseDomainFromImage`` does; None for a Docker Hub library image (one component)."""
    parts = image.split("/")
    if len(parts) < 2:
        return None
    if "." in parts[0] or ":" in parts[0]:
        return parts[0]
    return DOCKER_HUB_ADDRESS


def credentials_for(manifest: EdgeManifest, image: str) -> dict[str, str] | None:
    """The registryCredentials entry the agent pulls ``image`` with (the first whose address
    is the image's registry, ignoring case), or None."""
    registry = registry_of(image)
    if registry is None:
        return None
    for entry in manifest.registry_credentials.values():
        if entry["address"].lower() == registry.lower():
            return entry
    return None


def problems(manifest: EdgeManifest, *, anonymous_registries: Collection[str] = ()) -> list[str]:
    """What a real device would fail on, each a sentence that names the fix: host ports that
    clash (with edgeHub's or with each other), images the device could not pull for want of
    registry credentials (``anonymous_registries``: registries known to serve without them,
    besides mcr.microsoft.com), routes naming modules the manifest does not have."""
    found: list[str] = []
    found += _port_problems(manifest)
    found += _registry_problems(manifest, anonymous_registries)
    found += _route_problems(manifest)
    return found


def host_ports(module: EdgeModule) -> list[tuple[int, str]]:
    """The host ports a module publishes (``HostConfig.PortBindings``), with their protocol."""
    bindings = (module.create_options.get("HostConfig") or {}).get("PortBindings") or {}
    ports: list[tuple[int, str]] = []
    for container_port, hosts in bindings.items():
        protocol = str(container_port).partition("/")[2] or "tcp"
        for host in hosts or []:
            value = str((host or {}).get("HostPort") or "").strip()
            if value.isdigit() and int(value) > 0:  # "" or "0": Docker picks a free port
                ports.append((int(value), protocol))
    return ports


def _port_problems(manifest: EdgeManifest) -> list[str]:
    found: list[str] = []
    hub = manifest.system_modules.get("edgeHub")
    hub_ports = set(host_ports(hub)) if hub is not None else set()
    hub_ports |= {(port, "tcp") for port in EDGE_HUB_PORTS}
    owners: dict[tuple[int, str], str] = {}
    for module in in_startup_order(manifest.modules.values()):
        for port, protocol in sorted(set(host_ports(module))):
            if (port, protocol) in hub_ports:
                found.append(
                    f"module {module.name} publishes host port {port}/{protocol}, which edgeHub "
                    f"publishes on every device (AMQPS 5671, MQTTS 8883, HTTPS 443): the "
                    f"module's container would not start; choose another port for it "
                    f"(targets.<name>.port in deploy.yaml)"
                )
            elif (port, protocol) in owners:
                found.append(
                    f"modules {owners[(port, protocol)]} and {module.name} both publish host "
                    f"port {port}/{protocol}: the second would not start; give each its own port"
                )
            else:
                owners[(port, protocol)] = module.name
    return found


def _registry_problems(manifest: EdgeManifest, anonymous: Collection[str]) -> list[str]:
    found: list[str] = []
    public = {r.lower() for r in (*PUBLIC_REGISTRIES, *anonymous)}
    addresses = sorted(entry["address"] for entry in manifest.registry_credentials.values())
    for module in in_startup_order(manifest.modules.values()):
        registry = registry_of(module.image)
        if registry is None or registry.lower() in public:
            continue
        if credentials_for(manifest, module.image) is not None:
            continue
        have = (
            f"the manifest's registryCredentials are for {', '.join(addresses)}"
            if addresses
            else "the manifest has no registryCredentials"
        )
        found.append(
            f"module {module.name}: the device could not pull {module.image}: {have}, none for "
            f"{registry} (the agent matches the image's registry to each address exactly); "
            "set registry.auth (basic or acr) in deploy.yaml so the manifest carries its "
            "credentials, or, if the registry serves images to anyone, say so "
            "(deployer simulate --public-registry HOST)"
        )
    return found


def _route_problems(manifest: EdgeManifest) -> list[str]:
    found: list[str] = []
    names = set(manifest.modules)
    for route_name, route in sorted(manifest.routes.items()):
        named = [("reads from", m) for m in _ROUTE_SOURCE.findall(route)]
        named += [("sends to", m) for m in _ROUTE_SINK.findall(route)]
        for verb, module in named:
            if module in names:
                continue
            close = [n for n in names if n.lower() == module.lower()]
            hint = (
                f"module names are case-sensitive: did you mean {close[0]}?"
                if close
                else f"the modules are {', '.join(sorted(names)) or 'none'}"
            )
            found.append(
                f"route {route_name} {verb} module {module}, which the manifest does not have "
                f"(edgeHub would route nothing there): {hint}; fix targets.<name>.routes in "
                "deploy.yaml"
            )
    return found


def in_startup_order(modules: Collection[EdgeModule]) -> list[EdgeModule]:
    return sorted(modules, key=lambda m: (m.startup_order, m.name))


# The create body -------------------------------------------------------------------------
