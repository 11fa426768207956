"""Make Azure ML's raw-request modules importable without azureml-inference-server-http.

Entry scripts import ``AMLRequest``/``rawhttp``/``AMLResponse`` from
``azureml.contrib.services.aml_request|aml_response`` (SDK v1 name) or
``azureml_inference_server_http.api.aml_request|aml_response``. We serve those names
from :mod:`.aml_request` and :mod:`.aml_response`.

Why a meta-path finder appended to the *end* of ``sys.meta_path`` rather than
``sys.modules`` insertion: the finder is consulted only after every normal finder has
failed, so a real installed module always wins, with no import attempted up front
(importing the real server package has side effects: it reads its config and may
exit). It is also lazy and composes with namespace packages - ``azureml`` is often a
real namespace package (azureml-core, mlflow plugins) that lacks ``contrib.services``;
inserting a fake ``azureml`` into ``sys.modules`` would shadow it, while the finder
only fills in the missing ``azureml.contrib``/``azureml.contrib.services`` levels.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_loader
from types import ModuleType

_ALIASES = {
    "azureml.contrib.services.aml_request": "aml_request",
    "azureml.contrib.services.aml_response": "aml_response",
    "azureml_inference_server_http.api.aml_request": "aml_request",
    "azureml_inference_server_http.api.aml_response": "aml_response",
}
# Parent packages we create (empty) when nothing real provides them.
_PACKAGES = frozenset(
    {
        "azureml",
        "azureml.contrib",
        "azureml.contrib.services",
        "azureml_inference_server_http",
        "azureml_inference_server_http.api",
    }
)
# Where a script's @rawhttp may have recorded itself: ours, or a real install's.
RAW_FLAG_MODULES = (f"{__package__}.aml_request", *(k for k in _ALIASES if k.endswith("request")))


class AzureMLShimFinder(MetaPathFinder, Loader):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname in _ALIASES:
            return spec_from_loader(fullname, self)
        if fullname in _PACKAGES:
            return spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        target = _ALIASES.get(spec.name)
        if target is None:
            return None  # an empty package module; __path__ = [] from the spec
        # The alias *is* our module (as Azure ML aliases its own in sys.modules), so
        # every name shares one _rawHttpRequested flag.
        return importlib.import_module(f".{target}", __package__)

    def exec_module(self, module: ModuleType) -> None:
        pass


def install() -> None:
    """Append the finder once; real modules found by earlier finders take precedence."""
    if not any(isinstance(finder, AzureMLShimFinder) for finder in sys.meta_path):
        sys.meta_path.append(AzureMLShimFinder())


def raw_http_requested() -> bool:
    """Whether the loaded script used ``@rawhttp`` from ours or a real module."""
    return any(
        getattr(sys.modules.get(name), "_rawHttpRequested", False) for name in RAW_FLAG_MODULES
    )
