"""config.pbtxt rendering: golden files for both flavours, and the text parses back to the same spec."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf import text_format
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2 as mc

from exporter.flavors import get_flavor
from treeserve import contract
from treeserve.errors import ConfigError
from treeserve.repository import TritonModelSpec, parse_config, render_config

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
FEATURES = ("tenure_days", "orders_30d", "spend_30d", "support_tickets_90d", "days_since_last_order")


def _spec(task: str, n_classes: int = 2) -> TritonModelSpec:
    return TritonModelSpec(
        name="churn-prediction",
        task=task,  # type: ignore[arg-type]
        features=FEATURES,
        n_classes=n_classes,
        versions=(3, 4),
        routing={"champion": "3", "challenger": "4"},
        feature_service="churn_model",
        entity_keys=("customer_id",),
    )


SPECS = {
    "binary": _spec("binary"),
    "multiclass": _spec("multiclass", 4),
    "regression": _spec("regression", 1),
}
FLAVORS = ("python-ort", "onnxruntime")


def _golden(name: str, text: str) -> str:
    path = GOLDEN / name
    if os.environ.get("TREESERVE_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    return path.read_text()


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("task", sorted(SPECS))
def test_config_matches_golden_file(task: str, flavor: str) -> None:
    text = render_config(SPECS[task], get_flavor(flavor))
    assert text == _golden(f"{task}.{flavor}.pbtxt", text)


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("task", sorted(SPECS))
def test_config_parses_back_to_the_same_spec(task: str, flavor: str) -> None:
    spec, parsed_flavor = parse_config(render_config(SPECS[task], get_flavor(flavor)))
    assert spec == SPECS[task]
    assert parsed_flavor == flavor


def test_python_ort_runs_on_the_python_backend_and_onnxruntime_on_its_platform() -> None:
    py = text_format.Parse(render_config(SPECS["binary"], get_flavor("python-ort")), mc.ModelConfig())
    ort = text_format.Parse(render_config(SPECS["binary"], get_flavor("onnxruntime")), mc.ModelConfig())
    assert (py.backend, py.platform) == ("python", "")
    assert ort.platform == "onnxruntime_onnx"
    assert ort.default_model_filename == "model.onnx"


def test_tensors_follow_the_contract() -> None:
    cfg = text_format.Parse(render_config(SPECS["multiclass"], get_flavor("onnxruntime")), mc.ModelConfig())
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        (contract.INPUT_TENSOR, mc.TYPE_FP32, [len(FEATURES)])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [
        (contract.OUTPUT_PROBABILITIES, mc.TYPE_FP32, [4]),
        (contract.OUTPUT_LABEL, mc.TYPE_INT64, [1]),
    ]
    reg = text_format.Parse(render_config(SPECS["regression"], get_flavor("onnxruntime")), mc.ModelConfig())
    assert [(o.name, o.data_type, list(o.dims)) for o in reg.output] == [
        (contract.OUTPUT_PREDICTION, mc.TYPE_FP32, [1])
    ]


def test_parameters_carry_features_routing_and_entity_keys() -> None:
    cfg = text_format.Parse(render_config(SPECS["binary"], get_flavor("python-ort")), mc.ModelConfig())
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert json.loads(params[contract.PARAM_FEATURES]) == list(FEATURES)
    assert json.loads(params[contract.PARAM_ROUTING]) == {"champion": "3", "challenger": "4"}
    assert json.loads(params[contract.PARAM_ENTITY_KEYS]) == ["customer_id"]
    assert params[contract.PARAM_FEATURE_SERVICE] == "churn_model"
    assert list(cfg.version_policy.specific.versions) == [3, 4]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 200
    assert cfg.max_batch_size == 1024


def test_dynamic_batching_off_leaves_no_batcher() -> None:
    spec = TritonModelSpec(name="m", task="binary", features=("a",), dynamic_batching=False)
    cfg = text_format.Parse(render_config(spec, get_flavor("python-ort")), mc.ModelConfig())
    assert not cfg.HasField("dynamic_batching")
    assert parse_config(render_config(spec, get_flavor("python-ort")))[0].dynamic_batching is False


def test_unknown_flavour_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown flavour 'tensorrt'"):
        get_flavor("tensorrt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "ranking"}, "unknown task"),
        ({"features": ()}, "empty feature list"),
        ({"features": ("a", "a")}, "duplicate"),
        ({"task": "binary", "n_classes": 3}, "binary task"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "m", "task": "binary", "features": ("a", "b")}
    with pytest.raises(ConfigError, match=message):
        TritonModelSpec(**{**base, **kwargs})  # type: ignore[arg-type]


_names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=12)


@given(
    features=st.lists(_names, min_size=1, max_size=8, unique=True),
    routing=st.dictionaries(
        st.sampled_from(["champion", "challenger", "shadow"]), st.integers(1, 99), max_size=3
    ),
    queue_delay_us=st.integers(0, 100_000),
    max_batch_size=st.integers(1, 4096),
)
def test_any_spec_survives_a_round_trip(
    features: list[str], routing: dict[str, int], queue_delay_us: int, max_batch_size: int
) -> None:
    spec = TritonModelSpec(
        name="m",
        task="regression",
        features=tuple(features),
        versions=tuple(routing.values()),
        routing={a: str(v) for a, v in routing.items()},
        queue_delay_us=queue_delay_us,
        max_batch_size=max_batch_size,
    )
    for flavor in FLAVORS:
        assert parse_config(render_config(spec, get_flavor(flavor))) == (spec, flavor)
