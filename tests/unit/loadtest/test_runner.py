"""Runner input handling: durations, the host guard, the Locust command line, default targets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.settings import TritonServerSettings
from gateway.settings import GatewaySettings
from loadtest.errors import LoadtestConfigError
from loadtest.runner import check_host, default_host, locust_command, parse_duration
from treeserve_app.settings import Settings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("30", 30), ("2m", 120), ("1m30s", 90), ("1h", 3600), (" 5S ", 5), (2.5, 2.5)],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10 minutes", "0s", "-3", "s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(LoadtestConfigError):
        parse_duration(text)


@given(
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=1, max_value=59),
)
def test_duration_components_add_up(h: int, m: int, s: int) -> None:
    assert parse_duration(f"{h}h{m}m{s}s") == h * 3600 + m * 60 + s


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "127.0.0.1:8001", "grpc://localhost:8081", "http://[::1]:8080", "127.5.0.1:1"],
)
def test_loopback_targets_are_allowed(url: str) -> None:
    check_host(url, [])


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080", "gateway.prod:8081", "https://example.com"])
def test_other_hosts_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(LoadtestConfigError, match="refusing to load-test"):
        check_host(url, [])
    check_host(url, ["10.0.0.5", "GATEWAY.prod", "example.com"])


def test_locust_command_is_headless_bounded_and_writes_every_report(tmp_path: Path) -> None:
    cmd = locust_command(
        target="gateway-grpc",
        host="127.0.0.1:8081",
        users=8,
        spawn_rate=4,
        duration_s=10,
        report_dir=tmp_path,
    )
    assert "--headless" in cmd
    assert cmd[cmd.index("--run-time") + 1] == "10s"
    assert cmd[cmd.index("--users") + 1] == "8"
    assert cmd[cmd.index("--json-file") + 1] == str(tmp_path / "stats")  # Locust appends .json
    assert cmd[cmd.index("--html") + 1] == str(tmp_path / "report.html")
    assert "--csv" in cmd
    assert cmd[-1] == "GatewayGrpcUser"
    assert "--processes" not in cmd
    assert "--processes" in locust_command(
        target="triton", host="h", users=1, spawn_rate=1, duration_s=1, report_dir=tmp_path, processes=2
    )


def test_default_hosts_follow_the_service_settings(treeserve_home: Path) -> None:
    settings = Settings(
        gateway=GatewaySettings(host="0.0.0.0", port=9001, grpc_port=9002),
        triton=TritonServerSettings(grpc_port=9003),
    )
    assert default_host(settings, "gateway") == "http://127.0.0.1:9001"
    assert default_host(settings, "gateway-grpc") == "127.0.0.1:9002"
    assert default_host(settings, "triton") == "127.0.0.1:9003"
    with pytest.raises(LoadtestConfigError, match="unknown target"):
        default_host(settings, "mlflow")
