"""Flavours: how one model description becomes a runnable Triton version directory.

A flavour contributes two things: its part of ``config.pbtxt`` (backend/platform and anything
backend-specific) and the files of a version directory. Built in:

- ``python-ort``: Triton's Python backend runs ``model.py`` (ONNX Runtime over the whole dynamic
  batch) next to ``model.onnx``; works with the tritonserver from ``nvidia-pytriton``.
- ``onnxruntime``: ``platform: "onnxruntime_onnx"``, ``model.onnx`` only (NGC container).

A third flavour registers itself with ``register_flavor`` from its own module; ``get_flavor``
imports ``exporter.<name>`` on first use when the name is not registered yet (``fil`` ->
``exporter.fil``).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treeserve.errors import ConfigError

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

    from treeserve.repository import TritonModelSpec

ONNX_FILE = "model.onnx"
PYTHON_MODEL_FILE = "model.py"
_TEMPLATE = Path(__file__).with_name("python_model.py.tmpl")


@dataclass(frozen=True)
class VersionArtifacts:
    """What conversion produced for one version; flavours pick the files they need."""

    spec: TritonModelSpec
    onnx_model: bytes
    """Serialized ONNX model with the contract's tensor names."""
    xgboost_model: bytes = b""
    """The booster (cut to its best iteration) in XGBoost JSON format."""
    extra: dict[str, Any] = field(default_factory=dict)


class Flavor(ABC):
    """One way of running a model version in Triton."""

    name: str = ""

    @abstractmethod
    def configure(self, spec: TritonModelSpec, cfg: mc.ModelConfig) -> None:
        """Fill the flavour-specific fields of ``cfg`` (inputs, outputs and parameters are set)."""

    @abstractmethod
    def write_version_files(self, artifacts: VersionArtifacts, version_dir: Path) -> list[str]:
        """Write the model files into ``version_dir`` (exists, empty); return the file names."""


class PythonOrtFlavor(Flavor):
    """Python backend + ONNX Runtime (the local tritonserver has no onnxruntime backend)."""

    name = "python-ort"

    def configure(self, spec: TritonModelSpec, cfg: mc.ModelConfig) -> None:
        cfg.backend = "python"

    def write_version_files(self, artifacts: VersionArtifacts, version_dir: Path) -> list[str]:
        (version_dir / ONNX_FILE).write_bytes(artifacts.onnx_model)
        (version_dir / PYTHON_MODEL_FILE).write_text(_TEMPLATE.read_text())
        return [ONNX_FILE, PYTHON_MODEL_FILE]


class OnnxRuntimeFlavor(Flavor):
    """Triton's native onnxruntime backend (NGC container, CPU or GPU)."""

    name = "onnxruntime"

    def configure(self, spec: TritonModelSpec, cfg: mc.ModelConfig) -> None:
        cfg.platform = "onnxruntime_onnx"
        cfg.default_model_filename = ONNX_FILE

    def write_version_files(self, artifacts: VersionArtifacts, version_dir: Path) -> list[str]:
        (version_dir / ONNX_FILE).write_bytes(artifacts.onnx_model)
        return [ONNX_FILE]


_REGISTRY: dict[str, Flavor] = {}


def register_flavor(flavor: Flavor) -> None:
    """Make ``flavor`` available under ``flavor.name`` (idempotent)."""
    _REGISTRY[flavor.name] = flavor


def get_flavor(name: str) -> Flavor:
    """The flavour called ``name``; imports ``exporter.<name>`` on demand for add-on flavours."""
    if name not in _REGISTRY:
        module = "exporter." + name.replace("-", "_")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    if name not in _REGISTRY:
        raise ConfigError(f"unknown flavour {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def flavor_names() -> list[str]:
    """Registered flavour names."""
    return sorted(_REGISTRY)


register_flavor(PythonOrtFlavor())
register_flavor(OnnxRuntimeFlavor())
