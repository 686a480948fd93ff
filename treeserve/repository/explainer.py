"""The explainer companion of a served model: ``<repo>/<model>__explain``.

Version ``N`` of ``<model>__explain`` explains version ``N`` of ``<model>``: a Triton
Python-backend model that answers the contract's ``features`` input with ``contributions``
(float32 ``[n_groups, n_features + 1]`` per row: exact TreeSHAP in the model's margin space, the
bias last). It is installed with its version and removed with it (``store.install_staged`` /
``store.remove_version``); its ``config.pbtxt`` is rendered from the served model's spec, with
the versions that have an explainer, whenever the model's config is written. Layout::

    <repo>/<model>__explain/config.pbtxt
    <repo>/<model>__explain/<version>/explainer.json   the compiled trees (treeserve.treeshap)
    <repo>/<model>__explain/<version>/reference.npz    canary inputs + the contributions
    <repo>/<model>__explain/<version>/model.py, treeshap.py, treeserve.json
"""

from __future__ import annotations

import json
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from treeserve import contract
from treeserve.repository.config import PARAM_TASK, TritonModelSpec

EXPLAINER_FILE = "explainer.json"
PARAM_EXPLAINS = "treeserve.explains"
"""Parameter of the companion's config: the model it explains."""


def explainer_name(model: str) -> str:
    """Triton name of the companion that explains ``model``."""
    return f"{model}{contract.EXPLAINER_SUFFIX}"


def is_explainer_name(name: str) -> bool:
    """True for a companion's model name."""
    return name.endswith(contract.EXPLAINER_SUFFIX)


def output_groups(spec_or_task: TritonModelSpec | str, n_classes: int = 2) -> int:
    """Rows of the contributions tensor: one per class for multiclass, else one."""
    if isinstance(spec_or_task, TritonModelSpec):
        return spec_or_task.n_classes if spec_or_task.task == "multiclass" else 1
    return n_classes if spec_or_task == "multiclass" else 1


def build_explainer_config(spec: TritonModelSpec, versions: tuple[int, ...]) -> mc.ModelConfig:
    """The companion's ``ModelConfig``: Python backend, dynamic batching like the model's."""
    cfg = mc.ModelConfig(name=explainer_name(spec.name), backend="python", max_batch_size=spec.max_batch_size)
    cfg.version_policy.specific.versions.extend(sorted(versions))
    cfg.input.append(mc.ModelInput(name=spec.input_name, data_type=mc.TYPE_FP32, dims=[spec.n_features]))
    cfg.output.append(
        mc.ModelOutput(
            name=contract.OUTPUT_CONTRIBUTIONS,
            data_type=mc.TYPE_FP32,
            dims=[output_groups(spec), spec.n_features + 1],
        )
    )
    if spec.dynamic_batching:
        cfg.dynamic_batching.max_queue_delay_microseconds = spec.queue_delay_us
    cfg.instance_group.append(mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU))
    params = {
        contract.PARAM_FEATURES: json.dumps(list(spec.features)),
        PARAM_TASK: spec.task,
        PARAM_EXPLAINS: spec.name,
    }
    for key, value in params.items():
        cfg.parameters[key].string_value = value
    return cfg


def explainer_file(version_folder: Path) -> Path:
    """``explainer.json`` of a companion version directory."""
    return Path(version_folder) / EXPLAINER_FILE
