"""What planning starts from: a validated config, where it lives, and its model version."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deployer.buildcontext import hash_tree
from deployer.config.model import DeployConfig

MODEL_HASH_LENGTH = 12
# Without a model there is nothing to version; "1" is what Azure ML gives a first version,
# and it keeps every label and folder that holds a version a plain, valid value.
NO_MODEL_VERSION = "1"


def auto_version(model_hash: str) -> str:
    """``version: auto``: the first 32 bits of the model's content hash, in decimal.

    Azure ML's registry numbers versions 1, 2, 3..., and azureml-core's
    ``Model.get_model_path`` reads version folders with ``int()``; a count of commits or
    registrations is not available in a shallow CI checkout, so the version is derived from
    the files alone: the same files give the same version on any machine, other files
    another one (two models share a version with odds of 1 in 2**32). It distinguishes
    versions; it does not order them.
    """
    return str(int(model_hash[:8], 16) or 1)  # never 0: Azure ML versions start at 1


@dataclass(frozen=True)
class PlanInputs:
    config: DeployConfig
    config_path: Path
    base_dir: Path
    model_version: str
    model_hash: str  # 12 hex digits of the model files' content hash; "" without a model

    @classmethod
    def of(cls, config: DeployConfig, config_path: Path) -> PlanInputs:
        base_dir = config_path.resolve().parent
        if config.model is None:
            return cls(config, config_path, base_dir, NO_MODEL_VERSION, "")
        model_hash = hash_tree(base_dir / config.model.path)[:MODEL_HASH_LENGTH]
        version = config.model.version
        if version == "auto":
            version = auto_version(model_hash)
        return cls(config, config_path, base_dir, version, model_hash)
