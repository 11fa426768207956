"""``iot_edge``: an Azure IoT Edge deployment manifest that runs the scoring image as a module.

One file, ``deployment.json``. With ``device_id`` it is the ``{"modulesContent": ...}`` that
``az iot edge set-modules`` applies to one device; with ``deployment`` it is a whole IoT Hub
configuration (id, labels, targetCondition, priority, content) for ``az iot edge deployment
create``, applied to every device the condition selects.
"""

from __future__ import annotations

import json
import re
from typing import Any

from deployer.buildcontext import BuildContext
from deployer.placeholders import placeholder
from deployer.targets.base import RenderContext, TargetContext
from deployer.targets.iot_edge.schema import Config

# The IoT Edge 1.5 LTS runtime images, and the host ports edgeHub publishes as in every
# standard manifest: AMQPS 5671, MQTTS 8883, HTTPS/WebSockets 443 (for leaf devices).
EDGE_AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
EDGE_HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"
EDGE_HUB_PORTS = (5671, 8883, 443)
# How long edgeHub keeps messages for $upstream while the device is offline.
STORE_AND_FORWARD_TTL_SECS = 7200

# A twin value holds at most 512 bytes, so the edgeAgent reads createOptions from
# "createOptions", "createOptions01", "createOptions02", ... and concatenates them (two-digit
# sequence numbers, no gaps). The agent accepts up to 100 chunks, but its design note and
# the IoT Edge tooling stop at eight (createOptions07, 4 KB): we keep to what all agree on.
CREATE_OPTIONS_CHUNK_CHARS = 512
CREATE_OPTIONS_MAX_CHUNKS = 8


def own_image(ctx: TargetContext) -> BuildContext | None:
    return None


def compact_json(value: Any) -> str:
    """createOptions as the runtime stores them: one line, no spaces, ASCII only.

    Escaping non-ASCII characters makes characters and bytes the same count, so a chunk of
    512 characters is also within the twin's 512-byte limit.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def create_options_fields(serialised: str) -> dict[str, str]:
    """Split serialised createOptions into the settings fields the edgeAgent joins again.

    Chunks are cut at any character (even inside an escape sequence): only their
    concatenation is parsed. An empty string gives no field at all (no create options).
    """
    chunks = [
        serialised[start : start + CREATE_OPTIONS_CHUNK_CHARS]
        for start in range(0, len(serialised), CREATE_OPTIONS_CHUNK_CHARS)
    ]
    if len(chunks) > CREATE_OPTIONS_MAX_CHUNKS:
        limit = CREATE_OPTIONS_CHUNK_CHARS * CREATE_OPTIONS_MAX_CHUNKS
        raise ValueError(f"createOptions are {len(serialised)} characters; at most {limit} fit")
    return {
        "createOptions" if index == 0 else f"createOptions{index:02d}": chunk
        for index, chunk in enumerate(chunks)
    }


def module_settings(image: str, create_options: dict[str, Any]) -> dict[str, str]:
    """A module's ``settings``: its image and its createOptions, chunked."""
    return {"image": image, **create_options_fields(compact_json(create_options))}


def model_create_options(port: int) -> dict[str, Any]:
    """Docker create options of the model's module: its port, published on the device."""
    key = f"{port}/tcp"
    return {
        "ExposedPorts": {key: {}},
        "HostConfig": {"PortBindings": {key: [{"HostPort": str(port)}]}},
    }


def render(ctx: RenderContext) -> dict[str, str]:
    target = _config_of(ctx)
    edge_hub_options = {
        "HostConfig": {
            "PortBindings": {f"{port}/tcp": [{"HostPort": str(port)}] for port in EDGE_HUB_PORTS}
        }
    }
    manifest = ctx.templates.render(
        "deployment.json.j2",
        at_scale=target.deployment,
        labels=_labels(ctx),
        runtime_settings=_runtime_settings(ctx, target),
        edge_agent_settings={"image": EDGE_AGENT_IMAGE},
        edge_hub_settings=module_settings(EDGE_HUB_IMAGE, edge_hub_options),
        module_name=target.module_name,
        module_settings=module_settings(str(ctx.image), model_create_options(target.port)),
        # The image's server reads its port from here; the image's default is 5001.
        module_env={"DEPLOYER_SERVER_PORT": {"value": str(target.port)}},
        routes=_routes(target),
        time_to_live_secs=STORE_AND_FORWARD_TTL_SECS,
    )
    return {"deployment.json": manifest}


def _config_of(ctx: RenderContext) -> Config:
    if not isinstance(ctx.target, Config):
        raise TypeError(f"target {ctx.name!r} is not an iot_edge target")
    return ctx.target


def _labels(ctx: RenderContext) -> dict[str, str]:
    """Labels of an at-scale deployment (IoT Hub allows no '/' in keys: plain names)."""
    return {
        "service": ctx.config.name,
        "target": ctx.name,
        "model": ctx.config.model_name,
        "model-version": ctx.model_version,
    }


def _runtime_settings(ctx: RenderContext, target: Config) -> dict[str, Any]:
    """The edgeAgent's registry login, as ${ENV} placeholders filled in at deploy time."""
    registry = ctx.config.registry
    if registry.auth == "none":
        return {}
    # Docker logs in to a host[:port]; a namespace path is part of image names only.
    host = ctx.image.registry.split("/", 1)[0]
    name = target.registry_credentials_name or credentials_name(host)
    return {
        "registryCredentials": {
            name: {
                "username": placeholder(registry.username_env),
                "password": placeholder(registry.password_env),
                "address": host,
            }
        }
    }


def credentials_name(registry_host: str) -> str:
    """A registryCredentials key for a host: twin keys may not hold '.', '$', '#' or ' '."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", registry_host).strip("-")


def _routes(target: Config) -> dict[str, str]:
    """The configured routes by name, or one sending the module's outputs to IoT Hub."""
    if target.routes:
        return dict(sorted(target.routes.items()))
    module = target.module_name
    return {f"{module}ToIoTHub": f"FROM /messages/modules/{module}/outputs/* INTO $upstream"}
