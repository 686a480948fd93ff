"""The ``fil`` flavour: tree models on the GPU through Triton's FIL backend (NGC container).

Why not ONNX on the GPU: ONNX Runtime registers the ``ai.onnx.ml`` TreeEnsemble kernels for the
CPU execution provider only (``docs/OperatorKernels.md`` in microsoft/onnxruntime: the CUDA
provider lists the domains ``ai.onnx``, ``com.microsoft`` and ``com.ms.internal.nhwc``, no
``ai.onnx.ml``), so an ONNX tree model on a GPU Triton still runs on the CPU. Triton's FIL backend
reads the XGBoost model file itself and runs it with cuML's Forest Inference Library.

The FIL backend fixes its tensor names: it reads ``input__0`` and writes ``output__0``
(``src/model.h`` in triton-inference-server/fil_backend), and it has no ``label`` output. The
contract's names (``features`` -> ``probabilities`` + ``label`` | ``prediction``) are kept by a
thin Python-backend model in front of it, so the gateway and the sync see the same model whatever
the flavour. A version directory holds::

    <repo>/<model>/<version>/model.py         the wrapper (contract tensors, one BLS call per batch)
    <repo>/<model>/<version>/xgboost.json     the registered booster at its best iteration
    <repo>/<model>/<version>/fil_config.json  the FIL model's ModelConfig (JSON)

When Triton loads version N of the wrapper, its ``initialize`` loads the FIL model
``<model>__fil_v<N>`` through the model-loading API with that config and ``xgboost.json`` as
override files (explicit model control, which treeserve always uses), and ``execute`` forwards
each dynamic batch to it. The FIL model's batch limit, batcher delay and instance count are taken
from the wrapper's own ``config.pbtxt`` at that moment (rendered from the settings by the sync),
so FIL accepts every batch the wrapper forwards. Binary classifiers: with ``predict_proba`` the backend's default path
expands a binary model's single score to ``[1 - p, p]`` (``TreeliteModel::predict`` in
``src/tl_model.h``; cuML's FIL on the GPU does the same), so ``output__0`` is ``[n_classes]`` like
the contract's ``probabilities``. ``use_experimental_optimizations`` stays off: that path writes
one column for binary models. The wrapper accepts one column too and expands it.

Everything is rendered from the same ``TritonModelSpec`` as the other flavours.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from exporter.errors import ParityError, UnsupportedModelError
from exporter.flavors import PYTHON_MODEL_FILE, Flavor, VersionArtifacts, register_flavor
from exporter.trees import split_ranges
from treeserve import contract
from treeserve.repository import load_reference

if TYPE_CHECKING:
    from treeserve.repository import TritonModelSpec

log = logging.getLogger(__name__)

FLAVOR_NAME = "fil"
FIL_MODEL_FILE = "xgboost.json"
"""The file name the FIL backend looks for with ``model_type: xgboost_json``."""
FIL_CONFIG_FILE = "fil_config.json"
FIL_INPUT = "input__0"
FIL_OUTPUT = "output__0"
FIL_MODEL_SUFFIX = "__fil"
"""The FIL model serving version N of ``<model>`` is ``<model>__fil_v<N>``."""
PARAM_FIL_MODEL_TYPE = "model_type"
PARAM_FIL_OUTPUT_CLASS = "output_class"
PARAM_FIL_PREDICT_PROBA = "predict_proba"
PARAM_FIL_THRESHOLD = "threshold"
PARAM_FIL_EXPERIMENTAL = "use_experimental_optimizations"
_WRAPPER_TEMPLATE = Path(__file__).with_name("fil_model.py.tmpl")
FILES: tuple[str, ...] = (PYTHON_MODEL_FILE, FIL_MODEL_FILE, FIL_CONFIG_FILE)


def fil_model_name(model: str, version: int | str) -> str:
    """Name of the FIL model the wrapper of ``model`` version ``version`` loads."""
    return f"{model}{FIL_MODEL_SUFFIX}_v{version}"


def build_fil_model_config(spec: TritonModelSpec) -> mc.ModelConfig:
    """The FIL backend's ``ModelConfig`` for ``spec`` (GPU instances, dynamic batching)."""
    cfg = mc.ModelConfig(
        name=f"{spec.name}{FIL_MODEL_SUFFIX}", backend="fil", max_batch_size=spec.max_batch_size
    )
    cfg.input.append(mc.ModelInput(name=FIL_INPUT, data_type=mc.TYPE_FP32, dims=[spec.n_features]))
    width = spec.n_classes if spec.is_classifier else 1
    cfg.output.append(mc.ModelOutput(name=FIL_OUTPUT, data_type=mc.TYPE_FP32, dims=[width]))
    cfg.instance_group.append(
        mc.ModelInstanceGroup(count=spec.instance_count, kind=mc.ModelInstanceGroup.KIND_GPU)
    )
    if spec.dynamic_batching:
        cfg.dynamic_batching.max_queue_delay_microseconds = spec.queue_delay_us
    params = {
        PARAM_FIL_MODEL_TYPE: "xgboost_json",
        PARAM_FIL_OUTPUT_CLASS: "true" if spec.is_classifier else "false",
        PARAM_FIL_PREDICT_PROBA: "true" if spec.is_classifier else "false",
        # The "experimental" FIL path writes one column for binary models; the default path
        # expands them to [1 - p, p], which is what dims [n_classes] above promise.
        PARAM_FIL_EXPERIMENTAL: "false",
    }
    if spec.is_classifier:
        # Read (and required) by the backend whenever output_class is true.
        params[PARAM_FIL_THRESHOLD] = "0.5"
    for key, value in params.items():
        cfg.parameters[key].string_value = value
    return cfg


def render_fil_config(spec: TritonModelSpec) -> str:
    """The FIL model's config as ``config.pbtxt`` text (deterministic, for golden files)."""
    return text_format.MessageToString(build_fil_model_config(spec))


def fil_config_json(spec: TritonModelSpec) -> str:
    """The FIL model's config as the JSON Triton's model-loading API takes."""
    return json_format.MessageToJson(
        build_fil_model_config(spec), indent=2, sort_keys=True, preserving_proto_field_name=True
    )


class FilFlavor(Flavor):
    """Python-backend wrapper (contract tensors) in front of a FIL-backend model on the GPU."""

    name = FLAVOR_NAME

    def configure(self, spec: TritonModelSpec, cfg: mc.ModelConfig) -> None:
        cfg.backend = "python"
        # The wrapper only stacks and splits batches; the trees run in the FIL model on the GPU.
        for group in cfg.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_CPU

    def write_version_files(self, artifacts: VersionArtifacts, version_dir: Path) -> list[str]:
        if not artifacts.xgboost_model:
            raise UnsupportedModelError(
                f"model {artifacts.spec.name!r}: the fil flavour needs the XGBoost model (JSON); none was given"
            )
        (version_dir / FIL_MODEL_FILE).write_bytes(artifacts.xgboost_model)
        (version_dir / FIL_CONFIG_FILE).write_text(fil_config_json(artifacts.spec) + "\n")
        (version_dir / PYTHON_MODEL_FILE).write_text(_WRAPPER_TEMPLATE.read_text())
        check_against_onnx(version_dir, artifacts)
        return list(FILES)


# ---- validation -------------------------------------------------------------------------------


def xgboost_file_outputs(model_file: Path, task: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """What ``model_file`` (XGBoost JSON) says for ``inputs``, shaped like the contract's outputs."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(model_file))
    booster.set_param({"nthread": 1})
    booster.feature_names = None  # the file keeps real names; FIL sees a bare matrix
    pred = np.asarray(booster.predict(xgb.DMatrix(np.asarray(inputs, dtype=np.float32), missing=np.nan)))
    if task == "regression":
        return {contract.OUTPUT_PREDICTION: pred.reshape(-1, 1).astype(np.float64)}
    proba = np.column_stack([1.0 - pred, pred]) if pred.ndim == 1 else pred
    label = np.argmax(proba, axis=1).astype(np.int64).reshape(-1, 1)
    return {contract.OUTPUT_PROBABILITIES: proba.astype(np.float64), contract.OUTPUT_LABEL: label}


def compare_outputs(
    where: str, task: str, got: dict[str, np.ndarray], expected: dict[str, Any], *, atol: float, rtol: float
) -> float:
    """Max abs difference between ``got`` and ``expected``; ParityError beyond tolerance."""
    key = contract.OUTPUT_PREDICTION if task == "regression" else contract.OUTPUT_PROBABILITIES
    exp = np.asarray(expected[key], dtype=np.float64)
    out = np.asarray(got[key], dtype=np.float64).reshape(exp.shape) if got[key].size == exp.size else got[key]
    if out.shape != exp.shape:
        raise ParityError(f"{where}: {key} shape {out.shape} differs from the reference {exp.shape}")
    tol = atol if task != "regression" else rtol * max(1.0, float(np.max(np.abs(exp))) if exp.size else 1.0)
    diff = np.abs(out - exp)
    max_diff = float(np.max(diff)) if diff.size else 0.0
    if not np.all(np.isfinite(out)) or max_diff > tol:
        raise ParityError(
            f"{where}: {FIL_MODEL_FILE} {key} differ from the reference by {max_diff:.3g} (tolerance {tol:g})"
        )
    return max_diff


def check_fil_version(version_dir: Path, *, atol: float = 1e-5, rtol: float = 1e-5) -> float:
    """Check a fil version directory against its own ``reference.npz``; return the max abs diff.

    ``fil_config.json`` must parse as a ``ModelConfig`` with FIL's tensor names and the FIL
    parameters; ``xgboost.json`` must load in XGBoost and reproduce the stored reference outputs.
    """
    version_dir = Path(version_dir)
    where = f"fil version directory {version_dir}"
    cfg = json_format.Parse((version_dir / FIL_CONFIG_FILE).read_text(), mc.ModelConfig())
    if (
        cfg.backend != "fil"
        or [i.name for i in cfg.input] != [FIL_INPUT]
        or [o.name for o in cfg.output] != [FIL_OUTPUT]
    ):
        raise ParityError(
            f"{where}: {FIL_CONFIG_FILE} is not a FIL config with tensors {FIL_INPUT}/{FIL_OUTPUT}"
        )
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    if params.get(PARAM_FIL_MODEL_TYPE) != "xgboost_json":
        raise ParityError(f"{where}: {FIL_CONFIG_FILE} must say model_type xgboost_json")
    task = "regression" if params.get(PARAM_FIL_OUTPUT_CLASS) != "true" else "classifier"
    ref = load_reference(version_dir)
    reference = dict(ref.outputs)
    got = xgboost_file_outputs(version_dir / FIL_MODEL_FILE, task, ref.inputs)
    if task != "regression" and int(cfg.output[0].dims[0]) != got[contract.OUTPUT_PROBABILITIES].shape[1]:
        raise ParityError(
            f"{where}: FIL output dims {list(cfg.output[0].dims)} do not match the model's classes"
        )
    return compare_outputs(where, task, got, reference, atol=atol, rtol=rtol)


def check_against_onnx(version_dir: Path, artifacts: VersionArtifacts, *, atol: float = 1e-5) -> float:
    """At install time: ``xgboost.json`` and the parity-checked ONNX model agree on probe rows.

    The ONNX model already matched the registered booster (``exporter.validate``), so agreement
    here means the file FIL will read reproduces the reference outputs. Probe rows are drawn
    within each feature's split-threshold range, plus rows with NaNs (missing values).
    """
    from exporter.convert import run_onnx

    spec = artifacts.spec
    inputs = probe_rows(version_dir / FIL_MODEL_FILE, spec.n_features)
    expected = run_onnx(artifacts.onnx_model, inputs)
    got = xgboost_file_outputs(version_dir / FIL_MODEL_FILE, spec.task, inputs)
    where = f"model {spec.name!r} ({FLAVOR_NAME})"
    return compare_outputs(where, spec.task, got, expected, atol=atol, rtol=atol)


def probe_rows(model_file: Path, n_features: int, *, rows: int = 256, seed: int = 0) -> np.ndarray:
    """float32 rows spanning each feature's split thresholds (± 10 %), with NaN rows appended."""
    rng = np.random.default_rng(seed)
    try:
        lo, hi = split_ranges(json.loads(model_file.read_text()), n_features)
    except (KeyError, ValueError, TypeError) as e:  # an unexpected layout: sample [0, 1]
        log.info("fil probe: split ranges unavailable (%s)", e)
        lo, hi = np.zeros(n_features), np.ones(n_features)
    span = np.maximum(hi - lo, 1e-3)
    base = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(rows, n_features))
    nan_rows = base[: max(8, rows // 8)].copy()
    nan_rows[rng.random(nan_rows.shape) < 0.3] = np.nan
    return np.vstack([base, nan_rows, np.full((1, n_features), np.nan)]).astype(np.float32)


register_flavor(FilFlavor())
