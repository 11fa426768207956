"""``functions``'s driver: not in this version yet. Its section validates and its artifacts
render; ``deployer deploy``, ``status``, ``logs`` and ``down`` say so and exit 2."""

from __future__ import annotations

from deployer.targets.contract import Driver, Session, TargetRef, not_available


def connect(target: TargetRef, session: Session) -> Driver:
    not_available(target)
