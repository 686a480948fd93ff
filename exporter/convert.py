"""XGBoost booster -> ONNX model with the treeserve tensor contract and embedded metadata.

onnxmltools refuses boosters whose feature names are not ``f0..fN``, so a copy with the names
cleared is converted and the real names travel in the metadata. The converter's outputs are
mapped to the contract (docs/architecture.md, "Tensors"):

- classifiers: ``probabilities`` FP32 [N, n_classes] and ``label`` INT64 [N, 1]
- regressors: ``prediction`` FP32 [N, 1]
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from exporter.errors import UnsupportedModelError
from exporter.trees import finite_thresholds
from treeserve import contract

if TYPE_CHECKING:
    import onnx

    from exporter.source import SourceModel

TARGET_OPSET = 15
"""ai.onnx opset of the converted graph (the onnxmltools 1.16 maximum; NGC ORT backends run it)."""


def convert_to_onnx(src: SourceModel) -> onnx.ModelProto:
    """Convert ``src.booster`` and return an ONNX model with contract names and metadata."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    where = f"model {src.name!r} version {src.version}"
    booster, rewritten = finite_thresholds(src.booster, where=where)
    booster = booster.copy()
    booster.feature_names = None
    booster.feature_types = None
    try:
        model = onnxmltools.convert_xgboost(
            booster,
            name=f"{src.name}-v{src.version}",
            initial_types=[(contract.INPUT_TENSOR, FloatTensorType([None, len(src.features)]))],
            target_opset=TARGET_OPSET,
        )
    except (RuntimeError, ValueError, NotImplementedError, AttributeError, KeyError) as e:
        raise UnsupportedModelError(f"{where} ({src.objective}): ONNX conversion failed: {e}") from e
    _map_outputs(model, src)
    _embed_metadata(model, src, rewritten_thresholds=rewritten)
    return model


def _map_outputs(model: onnx.ModelProto, src: SourceModel) -> None:
    """Rename/reshape the converter's outputs to the contract's names and shapes."""
    from onnx import TensorProto, helper

    graph = model.graph
    if not any(op.domain in ("", "ai.onnx") for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", TARGET_OPSET))
    produced = [o.name for o in graph.output]
    if src.task == "regression":
        if len(produced) != 1:
            raise UnsupportedModelError(f"regressor conversion produced outputs {produced}, expected one")
        plan = {produced[0]: (contract.OUTPUT_PREDICTION, TensorProto.FLOAT, "reshape")}
    else:
        if set(produced) != {"label", "probabilities"}:
            raise UnsupportedModelError(f"classifier conversion produced outputs {produced}")
        plan = {
            "probabilities": (contract.OUTPUT_PROBABILITIES, TensorProto.FLOAT, "identity"),
            "label": (contract.OUTPUT_LABEL, TensorProto.INT64, "reshape"),
        }

    shape_name = "treeserve_column_shape"
    graph.initializer.append(helper.make_tensor(shape_name, TensorProto.INT64, [2], [-1, 1]))
    new_outputs = []
    for old in produced:
        new_name, elem_type, how = plan[old]
        raw = f"{old}__raw"
        for node in graph.node:
            node.output[:] = [raw if o == old else o for o in node.output]
        for node in graph.node:
            node.input[:] = [raw if i == old else i for i in node.input]
        if how == "reshape":
            graph.node.append(
                helper.make_node("Reshape", [raw, shape_name], [new_name], name=f"to_{new_name}")
            )
            dims: list[int | str | None] = ["N", 1]
        else:
            graph.node.append(helper.make_node("Identity", [raw], [new_name], name=f"to_{new_name}"))
            dims = ["N", src.n_classes]
        new_outputs.append(helper.make_tensor_value_info(new_name, elem_type, dims))
    order = {n: i for i, n in enumerate(_output_order(src.task))}
    new_outputs.sort(key=lambda v: order[v.name])
    del graph.output[:]
    graph.output.extend(new_outputs)


def _output_order(task: str) -> tuple[str, ...]:
    if task == "regression":
        return (contract.OUTPUT_PREDICTION,)
    return (contract.OUTPUT_PROBABILITIES, contract.OUTPUT_LABEL)


def _embed_metadata(model: onnx.ModelProto, src: SourceModel, *, rewritten_thresholds: int) -> None:
    meta = {
        contract.TAG_FEATURES: json.dumps(src.features),
        "treeserve.task": src.task,
        "treeserve.n_classes": str(src.n_classes),
        "treeserve.objective": src.objective,
        "treeserve.best_iteration": "" if src.best_iteration is None else str(src.best_iteration),
        "mlflow.model_name": src.name,
        "mlflow.model_version": str(src.version),
        "mlflow.run_id": src.run_id,
        "source_sha256": src.source_sha256,
        "treeserve.rewritten_inf_thresholds": str(rewritten_thresholds),
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = f"treeserve export of {src.name} version {src.version}"


def onnx_metadata(model_bytes: bytes) -> dict[str, str]:
    """The metadata properties embedded in a serialized ONNX model."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    return {p.key: p.value for p in proto.metadata_props}


def run_onnx(model_bytes: bytes, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Score ``inputs`` with ONNX Runtime (1 thread) and return {output name: array}."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {contract.INPUT_TENSOR: np.asarray(inputs, dtype=np.float32)})
    return dict(zip(names, (np.asarray(v) for v in values), strict=True))
