"""One frozen description of a served model, rendered to Triton's ``config.pbtxt`` and parsed back.

``TritonModelSpec`` says what the model is (features, task, classes), how Triton should batch
and place it, and which registry versions it serves under which alias. ``render_config`` turns it
into ``config.pbtxt`` text through the protobuf ``ModelConfig`` message for a *flavour* (how the
version directory is executed: ``python-ort`` locally, ``onnxruntime`` in the NGC container,
``fil`` on GPU); ``parse_config`` turns that text back into the description and the flavour's
name, so the sync can rewrite routing without losing anything.

The flavour contributes its backend-specific fields through ``FlavorConfig.configure``; the
flavours themselves (and the files of a version directory) belong to the exporter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from treeserve import contract
from treeserve.errors import ConfigError

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")

# ONNX Runtime thread parameters. These are the onnxruntime_backend's own model-config keys; the
# python-ort model.py reads the same keys, so one config means the same thing in both flavours.
PARAM_ORT_INTRA_OP = "intra_op_thread_count"
PARAM_ORT_INTER_OP = "inter_op_thread_count"
PARAM_TASK = "treeserve.task"
PARAM_FLAVOR = "treeserve.flavor"


@dataclass(frozen=True)
class TritonModelSpec:
    """Everything ``config.pbtxt`` says about one model, independent of the flavour."""

    name: str
    """Triton model name = registered model name."""
    task: Task
    features: tuple[str, ...]
    """Ordered input features (the FeatureService order)."""
    n_classes: int = 2
    """Classes for classifiers (2 for binary); 1 for regressors."""
    versions: tuple[int, ...] = ()
    """Versions Triton loads (``version_policy: specific``)."""
    routing: Mapping[str, str] = field(default_factory=dict)
    """Alias -> version string, e.g. {"champion": "3"}."""
    routing_generation: int = 0
    """How many times the routing changed (``store.write_config`` counts); 0: never counted."""
    feature_service: str = ""
    entity_keys: tuple[str, ...] = ()
    max_batch_size: int = 1024
    dynamic_batching: bool = True
    queue_delay_us: int = 200
    """Dynamic batcher's ``max_queue_delay_microseconds``."""
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    ort_intra_op_threads: int = 1
    ort_inter_op_threads: int = 1
    input_name: str = contract.INPUT_TENSOR
    """Name of the input tensor (the contract's ``features``; read back from the config)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r} (expected one of {', '.join(TASKS)})")
        if not self.features:
            raise ConfigError(f"model {self.name!r}: empty feature list")
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"model {self.name!r}: duplicate feature names")
        if self.task == "regression" and self.n_classes != 1:
            object.__setattr__(self, "n_classes", 1)
        if self.task == "binary" and self.n_classes != 2:
            raise ConfigError(f"model {self.name!r}: binary task needs n_classes=2")
        if self.task == "multiclass" and self.n_classes < 2:
            raise ConfigError(f"model {self.name!r}: multiclass task needs n_classes>=2")
        if self.max_batch_size < 1:
            raise ConfigError("max_batch_size must be >= 1")
        if self.routing_generation < 0:
            raise ConfigError("routing_generation must be >= 0")
        # Normalise containers so equal specs compare equal whatever the caller passed.
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "entity_keys", tuple(self.entity_keys))
        object.__setattr__(self, "versions", tuple(sorted({int(v) for v in self.versions})))
        object.__setattr__(self, "routing", {str(k): str(v) for k, v in sorted(self.routing.items())})

    @property
    def n_features(self) -> int:
        """Width of the ``features`` input tensor."""
        return len(self.features)

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output tensors in contract order."""
        if self.is_classifier:
            return (contract.OUTPUT_PROBABILITIES, contract.OUTPUT_LABEL)
        return (contract.OUTPUT_PREDICTION,)

    def with_routing(
        self, routing: Mapping[str, str], versions: tuple[int, ...] | None = None
    ) -> TritonModelSpec:
        """A copy with new routing (and optionally a new version list)."""
        return replace(self, routing=dict(routing), versions=self.versions if versions is None else versions)


class FlavorConfig(Protocol):
    """The part of a flavour that ``config.pbtxt`` needs: its name and its backend fields."""

    name: str

    def configure(self, spec: TritonModelSpec, cfg: mc.ModelConfig) -> None:
        """Fill the flavour-specific fields of ``cfg`` (inputs, outputs and parameters are set)."""


def build_model_config(spec: TritonModelSpec, flavor: FlavorConfig) -> mc.ModelConfig:
    """The protobuf ``ModelConfig`` for ``spec`` in ``flavor``."""
    cfg = mc.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    cfg.version_policy.specific.versions.extend(spec.versions)

    cfg.input.append(mc.ModelInput(name=spec.input_name, data_type=mc.TYPE_FP32, dims=[spec.n_features]))
    if spec.is_classifier:
        cfg.output.append(
            mc.ModelOutput(name=contract.OUTPUT_PROBABILITIES, data_type=mc.TYPE_FP32, dims=[spec.n_classes])
        )
        cfg.output.append(mc.ModelOutput(name=contract.OUTPUT_LABEL, data_type=mc.TYPE_INT64, dims=[1]))
    else:
        cfg.output.append(mc.ModelOutput(name=contract.OUTPUT_PREDICTION, data_type=mc.TYPE_FP32, dims=[1]))

    if spec.dynamic_batching:
        cfg.dynamic_batching.max_queue_delay_microseconds = spec.queue_delay_us
    cfg.instance_group.append(
        mc.ModelInstanceGroup(
            count=spec.instance_count, kind=mc.ModelInstanceGroup.Kind.Value(spec.instance_kind)
        )
    )

    params = {
        contract.PARAM_FEATURES: json.dumps(list(spec.features)),
        contract.PARAM_ROUTING: json.dumps(dict(spec.routing), sort_keys=True),
        contract.PARAM_FEATURE_SERVICE: spec.feature_service,
        contract.PARAM_ENTITY_KEYS: json.dumps(list(spec.entity_keys)),
        PARAM_TASK: spec.task,
        PARAM_FLAVOR: flavor.name,
        PARAM_ORT_INTRA_OP: str(spec.ort_intra_op_threads),
        PARAM_ORT_INTER_OP: str(spec.ort_inter_op_threads),
    }
    if spec.routing_generation:
        params[contract.PARAM_ROUTING_GENERATION] = str(spec.routing_generation)
    for key, value in params.items():
        cfg.parameters[key].string_value = value

    flavor.configure(spec, cfg)
    return cfg


def render_config(spec: TritonModelSpec, flavor: FlavorConfig) -> str:
    """``config.pbtxt`` text for ``spec`` in ``flavor`` (deterministic, for golden files)."""
    return render_message(build_model_config(spec, flavor))


def render_message(cfg: mc.ModelConfig) -> str:
    """``config.pbtxt`` text of a ``ModelConfig`` message."""
    return text_format.MessageToString(cfg)


def parse_message(text: str) -> mc.ModelConfig:
    """The ``ModelConfig`` message of ``config.pbtxt`` text; ConfigError when it does not parse."""
    cfg = mc.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise ConfigError(f"unreadable config.pbtxt: {e}") from e
    return cfg


def parse_config(text: str) -> tuple[TritonModelSpec, str]:
    """Parse ``config.pbtxt`` text written by ``render_config`` back into (spec, flavour name)."""
    return spec_from_model_config(parse_message(text))


def _json_param(cfg: mc.ModelConfig, key: str, default: object) -> object:
    param = cfg.parameters.get(key)
    raw = param.string_value if param is not None else ""
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"model {cfg.name!r}: parameter {key} is not JSON: {raw!r}") from e


def routing_from_model_config(cfg: mc.ModelConfig) -> dict[str, str]:
    """Alias -> version string from the routing parameter (empty when there is none)."""
    routing = _json_param(cfg, contract.PARAM_ROUTING, {})
    if not isinstance(routing, dict):
        raise ConfigError(f"model {cfg.name!r}: parameter {contract.PARAM_ROUTING} is not a JSON object")
    return {str(k): str(v) for k, v in routing.items()}


def routing_generation_from_model_config(cfg: mc.ModelConfig) -> int:
    """The routing generation counter (0 when the config has none: written before it existed)."""
    param = cfg.parameters.get(contract.PARAM_ROUTING_GENERATION)
    raw = param.string_value.strip() if param is not None else ""
    if not raw:
        return 0
    if not raw.isdigit():
        raise ConfigError(
            f"model {cfg.name!r}: parameter {contract.PARAM_ROUTING_GENERATION} is not a count: {raw!r}"
        )
    return int(raw)


def spec_from_model_config(cfg: mc.ModelConfig) -> tuple[TritonModelSpec, str]:
    """The (spec, flavour name) a ``ModelConfig`` message describes."""
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    features = _json_param(cfg, contract.PARAM_FEATURES, [])
    routing = routing_from_model_config(cfg)
    entity_keys = _json_param(cfg, contract.PARAM_ENTITY_KEYS, [])
    if not isinstance(features, list) or not isinstance(entity_keys, list):
        raise ConfigError(f"model {cfg.name!r}: malformed treeserve parameters in config.pbtxt")
    if len(cfg.input) != 1:
        raise ConfigError(f"model {cfg.name!r}: config.pbtxt declares {len(cfg.input)} inputs, expected one")

    outputs = {o.name: o for o in cfg.output}
    task = params.get(PARAM_TASK)
    if contract.OUTPUT_PROBABILITIES in outputs:
        n_classes = int(outputs[contract.OUTPUT_PROBABILITIES].dims[0])
        task = task or ("binary" if n_classes == 2 else "multiclass")
    else:
        n_classes = 1
        task = task or "regression"

    flavor = params.get(PARAM_FLAVOR) or _guess_flavor(cfg)
    group = cfg.instance_group[0] if cfg.instance_group else None
    spec = TritonModelSpec(
        name=cfg.name,
        task=task,  # type: ignore[arg-type]
        features=tuple(str(f) for f in features),
        n_classes=n_classes,
        versions=tuple(int(v) for v in cfg.version_policy.specific.versions),
        routing=routing,
        routing_generation=routing_generation_from_model_config(cfg),
        feature_service=params.get(contract.PARAM_FEATURE_SERVICE, ""),
        entity_keys=tuple(str(k) for k in entity_keys),
        max_batch_size=cfg.max_batch_size,
        dynamic_batching=cfg.HasField("dynamic_batching"),
        queue_delay_us=cfg.dynamic_batching.max_queue_delay_microseconds
        if cfg.HasField("dynamic_batching")
        else 200,
        instance_count=group.count if group else 1,
        instance_kind=mc.ModelInstanceGroup.Kind.Name(group.kind) if group else "KIND_CPU",
        ort_intra_op_threads=int(params.get(PARAM_ORT_INTRA_OP, "1") or 1),
        ort_inter_op_threads=int(params.get(PARAM_ORT_INTER_OP, "1") or 1),
        input_name=cfg.input[0].name,
    )
    return spec, flavor


def with_routing_message(
    cfg: mc.ModelConfig, routing: Mapping[str, str], versions: tuple[int, ...], *, generation: int
) -> mc.ModelConfig:
    """A copy of ``cfg`` with new routing, routing generation and version policy; every other field
    is kept as is."""
    out = mc.ModelConfig()
    out.CopyFrom(cfg)
    del out.version_policy.specific.versions[:]
    out.version_policy.specific.versions.extend(sorted({int(v) for v in versions}))
    out.parameters[contract.PARAM_ROUTING].string_value = json.dumps(
        {str(k): str(v) for k, v in routing.items()}, sort_keys=True
    )
    if generation:
        out.parameters[contract.PARAM_ROUTING_GENERATION].string_value = str(generation)
    return out


def _guess_flavor(cfg: mc.ModelConfig) -> str:
    if cfg.platform == "onnxruntime_onnx" or cfg.backend == "onnxruntime":
        return "onnxruntime"
    if cfg.backend == "fil":
        return "fil"
    return "python-ort"
