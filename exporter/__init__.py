"""treeserve exporter: registered XGBoost version -> validated Triton model version.

source.py         MLflow side: resolve alias/version, download the booster, feature contract, reference rows
convert.py        booster -> ONNX with the contract's tensor names and embedded metadata
validate.py       onnx.checker + parity with XGBoost (reference rows + NaN rows)
flavors.py        python-ort / onnxruntime (+ add-ons such as fil.py): config part + version files
install.py        install_version (the sync's unit), write_model_config, export (the CLI's flow)
triton_server.py  the local tritonserver from .venv-triton: start/stop/status, load, canary
sync/             the promotion-driven reconcile loop and webhook receiver

The repository format itself (config.pbtxt, treeserve.json, reference.npz, staging) belongs to
``treeserve.repository``.
"""
