"""Scoring keys: an endpoint behind ``auth: key``, from the client's side.

deploy.yaml names the environment variables that hold the keys (``key_env``, and
``secondary_key_env`` for a rotation without downtime); the user keeps them as CI secrets.
deployer never generates a key: ACI never returns a secure value, so a key made at deploy
time could not be read back by the next ``deployer test`` or by the endpoint's clients.

``scoring_keys`` is what a driver calls when it connects (and ``deployer test --uri``):
the values, checked as the scoring server checks them (deployer.serving.config), each
registered with the run's secrets so that every report and log masks it, and the
``Authorization`` header the tests send. Reports show the header's name only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deployer.errors import UserError
from deployer.serving.config import MIN_KEY_LENGTH, key_problem

if TYPE_CHECKING:
    from deployer.secrets import Secrets

HEADER = "Authorization"
GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


@dataclass(frozen=True)
class ScoringKeys:
    """The keys an endpoint accepts, and how a client sends one."""

    env_names: tuple[str, ...]  # where they came from: primary first
    values: tuple[str, ...] = field(repr=False)  # secrets: never print these

    @property
    def primary(self) -> str:
        return self.values[0]

    @property
    def headers(self) -> dict[str, str]:
        """The header every request needs (its value is a secret)."""
        return {HEADER: f"Bearer {self.primary}"}

    def usage(self) -> str:
        """How to call the endpoint, in words, without the key."""
        return how_to_call(self.env_names)


def how_to_call(env_names: tuple[str, ...]) -> str:
    """How a client authenticates to an endpoint whose keys are in ``env_names``, in words
    that name the variables (CI secrets) and never show a key; "" without keys."""
    if not env_names:
        return ""
    text = f"{HEADER}: Bearer ${env_names[0]} (the key is the CI secret {env_names[0]}"
    if len(env_names) > 1:
        text += f"; {env_names[1]} is accepted too, for a rotation"
    return text + ")"


def uses_keys(target: object) -> bool:
    """Whether a target section has ``auth: key`` (the aci schema's Config, duck-typed)."""
    return bool(key_env_names(target))


def key_env_names(target: object) -> tuple[str, ...]:
    """The environment variables a target's keys come from; () without key auth."""
    primary = getattr(target, "key_env", None)
    if getattr(target, "auth", None) != "key" or not isinstance(primary, str):
        return ()
    secondary = getattr(target, "secondary_key_env", None)
    return (primary, secondary) if isinstance(secondary, str) else (primary,)


def scoring_keys(
    target: object, env: Mapping[str, str], secrets: Secrets | None = None
) -> ScoringKeys:
    """The keys of a target with ``auth: key`` from ``env``; ``UserError`` saying how to
    create one when the primary variable is missing, empty or unfit. A secondary variable
    that deploy.yaml names but the environment leaves unset or empty is left out (the
    rotation is over, or not begun). Every value is added to ``secrets`` (masked from now
    on) before anything can fail on it."""
    if not uses_keys(target):
        raise ValueError("the target does not use auth: key")
    names, values = [], []
    for index, name in enumerate(key_env_names(target)):
        value = env.get(name, "").strip()
        if secrets is not None and value:
            secrets.add(value)
        if not value:
            if index == 0:
                raise UserError(_missing(name))
            continue
        # Checked as the server checks it at start: a key it would refuse fails here.
        problem = key_problem(value)
        if problem is not None:
            hint = f"; create one with {GENERATE}" if len(value) < MIN_KEY_LENGTH else ""
            raise UserError(f"the scoring key in environment variable {name} {problem}{hint}")
        names.append(name)
        values.append(value)
    return ScoringKeys(tuple(names), tuple(values))


def _missing(name: str) -> str:
    return (
        f"auth: key needs a scoring key in the environment variable {name}, which is not set "
        f"or empty. Create one with\n    {GENERATE}\nand store it as a CI secret named {name} "
        f"(GitHub Actions: Settings > Secrets and variables > Actions, then "
        f"'env: {name}: ${{{{ secrets.{name} }}}}' in the workflow); clients send it as "
        f"'{HEADER}: Bearer <key>'"
    )
