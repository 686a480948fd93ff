"""TritonServer without a server: refusals before start, state files, the launch layout."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from exporter.errors import TritonNotRunningError, TritonStartError
from exporter.triton_server import TritonServer, _venv_python_version, resolve_venv
from treeserve.procs import free_port

CHECKOUT = Path(__file__).resolve().parents[3]
TRITON_VENV = CHECKOUT / ".venv-triton"


def _server(tmp_path: Path, **kw: object) -> TritonServer:
    args: dict[str, object] = {
        "venv": TRITON_VENV,
        "repository": tmp_path / "repo",
        "run_dir": tmp_path / "run",
        "http_port": free_port(),
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    args.update(kw)
    return TritonServer(**args)  # type: ignore[arg-type]


def test_missing_venv_is_named(tmp_path: Path) -> None:
    with pytest.raises(TritonStartError, match="nowhere is missing; run `make venv-triton`"):
        _server(tmp_path, venv=tmp_path / "nowhere").start()
    assert not (tmp_path / "run" / "triton.pid").exists()


def test_a_venv_without_tritonserver_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "venv"
    (fake / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    with pytest.raises(TritonStartError, match="has no tritonserver"):
        _server(tmp_path, venv=fake).start()


def test_a_taken_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(TritonStartError, match=f"metrics port {port} on 127.0.0.1 is already in use"):
            _server(tmp_path, metrics_port=port).start()
    assert not (tmp_path / "run" / "triton.pid").exists()


def test_the_backends_and_stub_are_laid_out_once(tmp_path: Path) -> None:
    server = _server(tmp_path)
    layout = server._prepare()
    stub = layout["backends"] / "python" / "triton_python_backend_stub"
    assert stub.is_file()
    assert (layout["backends"] / "python" / "libtriton_python.so").is_file()
    mtime = stub.stat().st_mtime_ns
    server._prepare()
    assert stub.stat().st_mtime_ns == mtime


def test_the_stub_gets_the_triton_venv_interpreter(tmp_path: Path) -> None:
    server = _server(tmp_path)
    env = server._env(server._prepare())
    assert env["PATH"].split(":")[0] == str(TRITON_VENV / "bin")
    assert env["PYTHONPATH"].startswith(str(TRITON_VENV / "lib"))
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
    assert _venv_python_version(TRITON_VENV) == "3.11"


def test_nothing_running_means_clear_answers(tmp_path: Path) -> None:
    server = _server(tmp_path)
    assert server.pid() is None
    assert not server.status().running
    assert not server.stop()
    with pytest.raises(TritonNotRunningError, match="treeserve triton start"):
        server.admin.repository_index()


def test_a_stale_pid_file_is_ignored(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "triton.pid").write_text("999999999\n")
    assert _server(tmp_path).pid() is None


def test_relative_default_venv_falls_back_to_the_checkout(tmp_path: Path) -> None:
    assert resolve_venv(tmp_path / ".venv-triton", Path(".venv-triton")) == CHECKOUT / ".venv-triton"
    assert resolve_venv(tmp_path / "x", tmp_path / "x") == tmp_path / "x"
