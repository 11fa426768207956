"""What planning starts from: a validated config, where it lives, and its model version."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deployer.buildcontext import hash_tree
from deployer.config.model import DeployConfig

MODEL_VERSION_LENGTH = 12


@dataclass(frozen=True)
class PlanInputs:
    config: DeployConfig
    config_path: Path
    base_dir: Path
    model_version: str

    @classmethod
    def of(cls, config: DeployConfig, config_path: Path) -> PlanInputs:
        base_dir = config_path.resolve().parent
        version = config.model.version
        if version == "auto":
            version = hash_tree(base_dir / config.model.path)[:MODEL_VERSION_LENGTH]
        return cls(config, config_path, base_dir, version)
