"""Build and push images with the Docker engine.

An image's tag is the hash of its build context (``BuildContext.tag``), so "this tag
exists" means "these exact inputs were built": an existing local image means no build, and
an existing manifest in the registry means no push.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from deployer.buildcontext import BuildContext, ImageRef
from deployer.errors import DeployerError
from deployer.events import Event, Sink
from deployer.registry_auth import BASIC_REJECTED, Credentials

if TYPE_CHECKING:
    import docker

# Build arguments the rendered Dockerfiles declare, passed through from the environment so
# that a private package index works without being written into the image.
PASSED_BUILD_ARGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")
LOG_TAIL = 30
_SPOOL_BYTES = 64 << 20


@dataclass(frozen=True)
class BuildOutcome:
    ref: ImageRef
    built: bool  # False: an image with this content tag already existed
    image_id: str


@dataclass(frozen=True)
class PushOutcome:
    ref: ImageRef
    pushed: bool  # False: the registry already had this tag
    digest: str


class BuildFailed(DeployerError):
    def __init__(self, message: str, log_tail: list[str]) -> None:
        self.log_tail = log_tail
        super().__init__(message)


class ImageBuilder:
    def __init__(self, client: docker.DockerClient, progress: Sink, no_cache: bool = False) -> None:
        self._client = client
        self._progress = progress
        # Rebuild every layer, even for a tag that exists (a base image or index changed).
        self._no_cache = no_cache

    def ensure_built(self, context: BuildContext, ref: ImageRef) -> BuildOutcome:
        import docker.errors

        image = None
        if not self._no_cache:
            with contextlib.suppress(docker.errors.ImageNotFound):
                image = self._client.images.get(str(ref))
        if image is not None:
            self._progress(Event("step", f"{ref}: unchanged (built before), no build"))
            return BuildOutcome(ref, False, image.id)
        self._progress(Event("step", f"building {ref}"))
        with _tar_context(context) as tar:
            stream = self._client.api.build(
                fileobj=tar,
                custom_context=True,
                tag=str(ref),
                rm=True,
                forcerm=True,
                pull=False,
                nocache=self._no_cache,
                network_mode="host",  # no bridge networks on these machines, by design
                buildargs={k: os.environ[k] for k in PASSED_BUILD_ARGS if os.environ.get(k)},
                decode=True,
            )
            try:
                image_id = self._follow_build(stream, ref)
            except BuildFailed as failed:
                raise _with_conda_hint(failed, context) from None
        return BuildOutcome(ref, True, image_id)

    def _follow_build(self, stream: Iterable[dict[str, Any]], ref: ImageRef) -> str:
        tail: deque[str] = deque(maxlen=LOG_TAIL)
        image_id = ""
        for chunk in stream:
            if "error" in chunk:
                tail.append(str(chunk["error"]).rstrip())
                raise BuildFailed(
                    f"building {ref} failed: {str(chunk['error']).strip()}", list(tail)
                )
            if "aux" in chunk and isinstance(chunk["aux"], dict):
                image_id = str(chunk["aux"].get("ID", image_id))
            text = str(chunk.get("stream", "")).rstrip()
            if text:
                for line in text.splitlines():
                    tail.append(line)
                    step = line.startswith("Step ")
                    self._progress(Event("progress" if step else "detail", line, key="build"))
        if not image_id:
            image_id = self._client.images.get(str(ref)).id
        return image_id

    def ensure_pushed(self, ref: ImageRef, credentials: Credentials | None) -> PushOutcome:
        digest = self.remote_digest(ref, credentials)
        if digest:
            self._progress(Event("step", f"{ref}: already in the registry, no push"))
            return PushOutcome(ref, False, digest)
        self._progress(Event("step", f"pushing {ref}"))
        auth = credentials.auth_config() if credentials else None
        stream = self._client.api.push(
            f"{ref.registry}/{ref.repository}",
            tag=ref.tag,
            auth_config=auth,
            stream=True,
            decode=True,
        )
        digest = self._follow_push(stream, ref, credentials)
        return PushOutcome(ref, True, digest)

    def _follow_push(
        self, stream: Iterable[dict[str, Any]], ref: ImageRef, credentials: Credentials | None
    ) -> str:
        digest = ""
        for chunk in stream:
            if "error" in chunk:
                raise DeployerError(registry_error(ref, str(chunk["error"]), credentials))
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "Digest" in aux:
                digest = str(aux["Digest"])
            status = chunk.get("status")
            if status:
                layer = str(chunk.get("id", ""))
                detail = str(chunk.get("progress", "")).strip()
                line = f"{layer}: {status} {detail}".strip(": ") if layer else str(status)
                self._progress(Event("progress", line, key=layer or "push"))
        return digest

    def remote_digest(self, ref: ImageRef, credentials: Credentials | None) -> str:
        """The digest of ``ref`` in its registry, or "" when the registry lacks it."""
        import docker.errors

        auth = credentials.auth_config() if credentials else None
        try:
            data = self._client.images.get_registry_data(str(ref), auth_config=auth)
        except docker.errors.NotFound:
            return ""
        except docker.errors.APIError as exc:
            message = str(exc.explanation or exc)
            if "manifest unknown" in message or "not found" in message.lower():
                return ""
            raise DeployerError(registry_error(ref, message, credentials)) from None
        return str(data.id)


def _with_conda_hint(failed: BuildFailed, context: BuildContext) -> BuildFailed:
    """``failed``, pointing back at the conda file's line when pip failed on a package
    translated from it (the user wrote 'numpy=1.21', not what pip was asked for)."""
    from deployer.config.envfile import install_hint

    requirements = context.files.get("requirements.txt")
    hint = install_hint(requirements, failed.log_tail) if isinstance(requirements, str) else ""
    return BuildFailed(f"{failed}; {hint}", failed.log_tail) if hint else failed


def registry_error(ref: ImageRef, message: str, credentials: Credentials | None = None) -> str:
    """One clear sentence for what registries answer (401, 404, unreachable)."""
    lowered = message.lower()
    where = f"registry {ref.registry}"
    if "unauthorized" in lowered or "authentication required" in lowered or "401" in lowered:
        hint = credentials.if_rejected if credentials else BASIC_REJECTED
        said = f" (it said: {message.strip()})" if credentials and credentials.if_denied else ""
        return f"{where} rejected the credentials (401 unauthorized): {hint}{said}"
    if "denied" in lowered or "403" in lowered:
        hint = credentials.if_denied if credentials and credentials.if_denied else ""
        return (
            f"{where} denied access to {ref.repository} (403): "
            f"{hint or 'the user may not push there'}"
        )
    if "connection refused" in lowered or "no such host" in lowered or "dial tcp" in lowered:
        return (
            f"{where} is unreachable ({message.strip()}): is it running and is the address right?"
        )
    if "not found" in lowered or "404" in lowered:
        return f"{where} has no repository {ref.repository} (404): {message.strip()}"
    return f"{where}: {message.strip()}"


@contextmanager
def _tar_context(context: BuildContext) -> Iterator[IO[bytes]]:
    """The build context as a reproducible tar (fixed owners and times), spooled to disk
    past 64 MiB so that large models do not sit in memory."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for dest, content in sorted(context.files.items()):
                info = tarfile.TarInfo(dest)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if isinstance(content, str):
                    data = content.encode("utf-8")
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
                else:
                    info.size = content.stat().st_size
                    info.mode = 0o755 if os.access(content, os.X_OK) else 0o644
                    with Path(content).open("rb") as source:
                        tar.addfile(info, source)
        spool.seek(0)
        yield spool
