"""The secret values of one run, worked out once and masked in everything it writes.

A command finds them when it starts (the registry password, the scoring keys of targets
with ``auth: key``, from the environment variables deploy.yaml names), and a driver adds
what it learns later (a cloud token). Whoever must hide them subscribes: in GitHub Actions
the job registers each with ``::add-mask::`` the moment it is known. Every report,
comment, summary and output goes through ``Masker``, because container logs and error
messages may echo what they were given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from deployer.config.model import Registry
from deployer.scoring_keys import key_env_names

MASK = "***"
# Shorter values are not masked: masking one or two characters would blank whole logs.
MIN_SECRET_LENGTH = 3
# The scoring server's own key variables, when a run has them (a local ``deployer serve``
# with a key); masked like the rest.
SCORING_KEY_ENV = "DEPLOYER_SCORING_KEY"
SECONDARY_SCORING_KEY_ENV = "DEPLOYER_SCORING_KEY_SECONDARY"


class Masker:
    """Replaces every secret value in text (longest first, so overlaps mask fully)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )

    def text(self, value: str) -> str:
        for secret in self._secrets:
            value = value.replace(secret, MASK)
        return value

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        return value


class Secrets:
    """The run's secret values, in the order they became known."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self._listeners: list[Callable[[str], None]] = []
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH or value in self._values:
            return
        self._values.append(value)
        for listener in self._listeners:
            listener(value)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with every value known now and each one added later."""
        self._listeners.append(listener)
        for value in self._values:
            listener(value)

    @property
    def values(self) -> list[str]:
        return list(self._values)

    def masker(self) -> Masker:
        return Masker(self._values)


def run_secrets(
    registry: Registry, env: Mapping[str, str], targets: Iterable[object] = ()
) -> Secrets:
    """What a run knows to be secret before it starts: the registry password and the
    scoring keys, from the environment variables deploy.yaml (the registry's, and each
    ``auth: key`` target's ``key_env`` and ``secondary_key_env``) and deployer name."""
    names = [SCORING_KEY_ENV, SECONDARY_SCORING_KEY_ENV]
    if registry.auth != "none":
        names.insert(0, registry.password_env)
    for target in targets:
        names += key_env_names(target)
    values = []
    for name in names:
        value = env.get(name, "")
        if value:
            values.append(value)
            if value.strip() != value:  # a key is used stripped: mask that form too
                values.append(value.strip())
    return Secrets(values)
