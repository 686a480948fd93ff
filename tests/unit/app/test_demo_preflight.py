"""`treeserve demo` checks ports, the Triton venv and disk before it changes any state."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from treeserve.errors import ConfigError
from treeserve.procs import free_port
from treeserve_app import demo
from treeserve_app.settings import load_settings


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _triton(tmp_path: Path, **ports: int) -> SimpleNamespace:
    return SimpleNamespace(
        is_ready=lambda: False,
        venv=tmp_path,
        host="127.0.0.1",
        http_port=ports.get("http_port") or free_port(),
        grpc_port=ports.get("grpc_port") or free_port(),
        metrics_port=ports.get("metrics_port") or free_port(),
    )


def test_a_taken_gateway_port_is_named_with_its_setting(tmp_path: Path, taken_port: int) -> None:
    home = tmp_path / "home"
    s = load_settings(home=home, gateway={"port": taken_port, "grpc_port": free_port()})
    with pytest.raises(ConfigError, match=f"port {taken_port} is taken: .* set TREESERVE_GATEWAY__PORT"):
        demo.preflight(s, _triton(tmp_path))
    assert not home.exists()  # nothing written before the check


def test_a_taken_triton_port_is_named_with_its_setting(tmp_path: Path, taken_port: int) -> None:
    s = load_settings(home=tmp_path, gateway={"port": free_port(), "grpc_port": free_port()})
    with pytest.raises(ConfigError, match="TREESERVE_TRITON__GRPC_PORT"):
        demo.preflight(s, _triton(tmp_path, grpc_port=taken_port))


def test_a_missing_triton_venv_says_how_to_make_it(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path)
    triton = _triton(tmp_path)
    triton.venv = tmp_path / "no-venv"
    with pytest.raises(ConfigError, match="make venv-triton"):
        demo.preflight(s, triton)


def test_too_little_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "MIN_FREE_DISK_MB", 10**12)
    s = load_settings(home=tmp_path / "new", gateway={"port": free_port(), "grpc_port": free_port()})
    with pytest.raises(ConfigError, match=r"MB free under .*the demo needs"):
        demo.preflight(s, _triton(tmp_path))
