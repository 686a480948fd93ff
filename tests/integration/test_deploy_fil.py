"""The ``fil`` flavour's wrapper in a real Triton: load API, BLS call, contract tensors, canary.

The local tritonserver (nvidia-pytriton) has no FIL backend, so the FIL model the wrapper loads is
played by a Python-backend stand-in that answers exactly like FIL (``input__0`` -> ``output__0``,
one probability column per class, or one column for binary models as the FIL docs describe). Everything
else is the real thing: the version directory the flavour writes, the wrapper ``model.py``, Triton's
model-loading API with override config and files, the BLS call pinned to the version, and the
exporter's canary against ``reference.npz``.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from exporter import fil
from exporter.flavors import VersionArtifacts, get_flavor
from exporter.triton_server import TritonServer
from treeserve import contract
from treeserve import repository as repo_mod
from treeserve.repository import TritonModelSpec

pytestmark = pytest.mark.integration

FEATURES = ("tenure_days", "orders_30d", "spend_30d", "support_tickets_90d")

STAND_IN = """
import base64, json
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

ONNX = base64.b64decode("{onnx_b64}")
ONE_COLUMN = {one_column}


class TritonPythonModel:
    def initialize(self, args):
        self.session = ort.InferenceSession(ONNX, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "input__0").as_numpy()
            proba = self.session.run(["probabilities"], {{"features": x.astype(np.float32)}})[0]
            y = proba[:, 1:2] if ONE_COLUMN else proba
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("output__0", np.ascontiguousarray(y, dtype=np.float32))]))
        return out
"""


def _install_fil_version(repo: Path, model: str, *, one_column: bool) -> None:
    import xgboost as xgb

    from exporter.convert import convert_to_onnx
    from exporter.source import SourceModel
    from exporter.validate import check_parity, parity_inputs

    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, len(FEATURES))).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 2]) + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, label=y, feature_names=list(FEATURES)),
        num_boost_round=12,
    )
    src = SourceModel(
        name=model,
        version="1",
        run_id="fil-test",
        booster=booster,
        features=list(FEATURES),
        task="binary",
        n_classes=2,
        objective="binary:logistic",
        best_iteration=None,
        source_sha256="0" * 64,
        reference=x[:100].astype(np.float64),
        xgboost_json=bytes(booster.save_raw("json")),
    )
    onnx_bytes = convert_to_onnx(src).SerializeToString()
    inputs = parity_inputs(src, rows=100)
    report = check_parity(src, onnx_bytes, inputs, proba_atol=1e-5, regression_rtol=1e-5)
    # As in exporter.install: the version is written from a bare spec (default batch limits); the
    # model config is rendered later from the settings (here: max_batch_size 64).
    bare = TritonModelSpec(name=model, task="binary", features=FEATURES, versions=(1,))
    spec = TritonModelSpec(
        name=model,
        task="binary",
        features=FEATURES,
        versions=(1,),
        routing={"champion": "1"},
        max_batch_size=64,
    )
    folder = repo_mod.version_dir(repo, model, 1)
    folder.mkdir(parents=True)
    files = get_flavor("fil").write_version_files(
        VersionArtifacts(spec=bare, onnx_model=onnx_bytes, xgboost_model=src.xgboost_json), folder
    )
    assert set(files) == set(fil.FILES)
    repo_mod.write_reference(folder, inputs, report.outputs)
    repo_mod.write_version_metadata(folder, {"model": model, "version": "1", "flavor": "fil", "files": files})
    repo_mod.write_config(repo, spec, get_flavor("fil"))
    assert fil.check_fil_version(folder) <= 1e-5  # the real xgboost.json reproduces the reference

    # FIL stand-in: same tensors and answer shape as FIL, on the Python backend of the local Triton.
    # The wrapper hands the version's xgboost.json to the FIL model under default_model_filename.
    cfg = json.loads((folder / fil.FIL_CONFIG_FILE).read_text())
    cfg["backend"] = "python"
    cfg["default_model_filename"] = "fil_stand_in.py"  # the Python backend wants a .py file
    cfg["instance_group"] = [{"count": 1, "kind": "KIND_CPU"}]
    if one_column:
        cfg["output"][0]["dims"] = ["1"]
    (folder / fil.FIL_CONFIG_FILE).write_text(json.dumps(cfg))
    code = STAND_IN.format(onnx_b64=base64.b64encode(onnx_bytes).decode(), one_column=one_column)
    (folder / fil.FIL_MODEL_FILE).write_text(code)


@pytest.mark.parametrize("one_column", [False, True], ids=["fil-two-columns", "fil-one-column"])
def test_fil_wrapper_serves_the_contract_through_triton(
    triton_server: TritonServer, one_column: bool
) -> None:
    model = f"deploy-fil-{'one' if one_column else 'two'}"
    _install_fil_version(triton_server.repository, model, one_column=one_column)
    triton_server.load_model(model)
    triton_server.admin.wait_version_ready(model, 1)

    # The wrapper loaded its FIL model through the model-loading API, named after the version
    # (override files: it is served, but not part of the repository index).
    companion = fil.fil_model_name(model, 1)
    assert triton_server.admin.version_ready(companion, 1)
    # ... with the batch limit of the wrapper's config, not the default the version was written with.
    with urllib.request.urlopen(f"{triton_server.http_url}/v2/models/{companion}/config", timeout=10) as r:
        assert json.loads(r.read())["max_batch_size"] == 64

    # The exporter's canary: Triton's probabilities and labels equal reference.npz.
    result = triton_server.canary(model, 1)
    assert result.max_abs_diff <= 1e-5 and result.rows > 0

    # Contract tensors and shapes, with NaN (missing) inputs.
    rows = np.array([[1.0, np.nan, -0.5, 0.0], [np.nan] * 4], dtype=np.float32)
    out = triton_server.admin.infer(model, 1, rows, [contract.OUTPUT_PROBABILITIES, contract.OUTPUT_LABEL])
    proba, label = out[contract.OUTPUT_PROBABILITIES], out[contract.OUTPUT_LABEL]
    assert proba.shape == (2, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert label.dtype == np.int64 and label.reshape(-1).tolist() == np.argmax(proba, axis=1).tolist()
