"""``sync --watch``'s health check: which Triton servers wake a pass, and how often.

Fake Triton admin clients stand in for the servers (the service takes a client factory); the
repository is a real one on disk with a routed config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import TritonControlError
from exporter.flavors import get_flavor
from exporter.sync.service import SyncService
from treeserve import repository as repo_mod
from treeserve_app.settings import load_settings

MODEL = "m"
POLL_INTERVAL_S = 30.0


@dataclass
class FakeServer:
    """A Triton server as the health check sees it: alive or not, and what it has READY."""

    up: bool = True
    ready: set[str] = field(default_factory=set)

    def live(self) -> bool:
        return self.up

    def ready_versions(self, model: str) -> set[str]:
        if not self.up:
            raise TritonControlError("Triton at fake is unreachable (test)")
        return set(self.ready) if model == MODEL else set()

    def close(self) -> None:
        pass


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> Any:
    repo = tmp_path / "repo"
    spec = repo_mod.TritonModelSpec(
        name=MODEL, task="binary", features=("a", "b"), versions=(1, 2), routing={"champion": "2"}
    )
    repo_mod.write_config(repo, spec, get_flavor("python-ort"))
    servers = {"a:8000": FakeServer(ready={"1", "2"}), "b:8000": FakeServer(ready={"1", "2"})}
    settings = load_settings(
        home=tmp_path,
        exporter={"repository": str(repo)},
        sync={"models": [MODEL], "triton_urls": list(servers), "poll_interval_s": POLL_INTERVAL_S},
    )
    clock = Clock()
    service = SyncService(settings, triton_client=lambda url, timeout_s: servers[url], clock=clock)
    return servers, service, clock


def _wakeups(service: SyncService, server: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "treeserve_sync_health_wakeups_total", {"server": server}
    )
    return value or 0.0


def test_servers_in_line_need_no_pass(world: Any) -> None:
    _, service, _ = world
    assert service.needs_pass() is None


def test_a_live_server_lacking_the_routed_version_wakes_a_pass_naming_it(world: Any) -> None:
    servers, service, _ = world
    servers["b:8000"].ready = set()  # restarted empty
    reason = service.needs_pass()
    assert reason is not None and "b:8000" in reason and MODEL in reason and "2" in reason
    assert "a:8000" not in reason
    assert _wakeups(service, "b:8000") == 1 and _wakeups(service, "a:8000") == 0


def test_a_dead_server_does_not_wake_a_pass(world: Any) -> None:
    servers, service, _ = world
    servers["b:8000"].up = False
    servers["b:8000"].ready = set()
    assert service.needs_pass() is None
    assert _wakeups(service, "b:8000") == 0


def test_the_same_reason_wakes_once_per_poll_interval(world: Any) -> None:
    servers, service, clock = world
    servers["a:8000"].ready = {"1"}  # a refuses to load version 2: retried by the poll, not every second
    first = service.needs_pass()
    assert first is not None and "a:8000" in first
    clock.now += POLL_INTERVAL_S / 2
    assert service.needs_pass() is None
    # another server losing the version is a new reason: it wakes a pass at once
    servers["b:8000"].ready = set()
    second = service.needs_pass()
    assert second is not None and "b:8000" in second
    clock.now += POLL_INTERVAL_S
    assert service.needs_pass() == first
    assert _wakeups(service, "a:8000") == 2 and _wakeups(service, "b:8000") == 1


def test_a_dead_server_is_checked_more_often_until_it_answers(world: Any) -> None:
    from exporter.sync.service import DOWN_RECHECK_S

    servers, service, _ = world
    every = service.settings.sync.health_interval_s
    assert service._health_every() == every
    servers["b:8000"].up = False  # killed: its restart should be noticed within DOWN_RECHECK_S
    assert service.needs_pass() is None
    assert service._health_every() == min(every, DOWN_RECHECK_S) < every
    servers["b:8000"].up, servers["b:8000"].ready = True, set()  # back, empty
    assert service.needs_pass() is not None
    assert service._health_every() == every
