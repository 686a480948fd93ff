"""The reconcile pass with in-memory stand-ins for the registry, the exporter and Triton.

The integration tests run the real thing; these pin the ordering rules cheaply: the routing only
ever names versions Triton has ready, failures never move the routing, a second pass is a no-op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from exporter.errors import ParityError, TritonControlError
from exporter.sync.metrics import SyncMetrics
from exporter.sync.reconcile import reconcile_once
from treeserve import repository as repo_mod
from treeserve.errors import ServiceUnavailableError
from treeserve_app.settings import load_settings

MODEL = "m"
FEATURES = ["a", "b"]


@dataclass
class FakeRegistry:
    """The part of MlflowClient the sync and rollback use, in memory."""

    aliases: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    version_tags: dict[tuple[str, str], str] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    """Registered versions (search_model_versions lists them)."""
    search_fails: bool = False
    down: bool = False
    """Unreachable: every call fails the way MlflowClient does when the server does not answer."""

    def get_registered_model(self, name: str) -> Any:
        self._check()
        return SimpleNamespace(aliases=dict(self.aliases), tags=dict(self.tags))

    def search_model_versions(
        self, filter_string: str, order_by: list[str] | None = None, max_results: int = 1000
    ) -> list[Any]:
        self._check()
        if self.search_fails:
            raise OSError("connection reset by peer")
        assert order_by == ["version_number DESC"]
        newest = sorted(self.versions, key=int, reverse=True)[:max_results]
        return [SimpleNamespace(version=v, status="READY") for v in newest]

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._check()
        self.tags[key] = value

    def _check(self) -> None:
        from mlflow.exceptions import MlflowException

        if self.down:
            raise MlflowException(
                "API request to http://127.0.0.1:5000/api/2.0/mlflow/registered-models/get failed with "
                "exception HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded"
            )

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        return SimpleNamespace(version=self.aliases[alias])

    def get_model_version(self, name: str, version: str) -> Any:
        return SimpleNamespace(version=version, tags={}, run_id="")

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = str(version)

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.version_tags[(version, key)] = value


@dataclass
class FakeTriton:
    """Loads what config.pbtxt lists; records (routing, ready) whenever anything changes."""

    repo: Path
    up: bool = True
    ready: set[str] = field(default_factory=set)
    loads: int = 0
    bad_canary: set[str] = field(default_factory=set)
    refuse: set[str] = field(default_factory=set)
    """Versions this server fails to load (the others still come up)."""
    broken_outputs: dict[str, float] = field(default_factory=dict)
    """version -> the value (NaN, inf) its first probability comes back as."""
    seen: list[tuple[dict[str, str], set[str]]] = field(default_factory=list)
    overrides: list[set[str]] = field(default_factory=list)
    """The versions of each load with a config override, in order."""

    def _check(self) -> None:
        if not self.up:
            raise TritonControlError("Triton at fake is unreachable (test)")

    def ready_versions(self, model: str) -> set[str]:
        self._check()
        self.observe()
        return set(self.ready)

    def load(self, model: str) -> None:
        self._check()
        self.loads += 1
        self.ready = {str(v) for v in repo_mod.read_model_config(self.repo, model).versions} - self.refuse
        self.observe()

    def load_override(self, model: str, config: str) -> None:
        """A load with a JSON config instead of the file's: only the versions it names."""
        self._check()
        versions = {str(v) for v in json.loads(config)["version_policy"]["specific"]["versions"]}
        self.overrides.append(versions)
        self.ready = self.ready | (versions - self.refuse)
        self.observe()

    def load_explainer(self, model: str) -> None:
        pass

    def live(self) -> bool:
        return self.up

    def infer(
        self, model: str, version: str, inputs: np.ndarray, outputs: list[str]
    ) -> dict[str, np.ndarray]:
        self._check()
        ref = repo_mod.read_reference(self.repo, model, version)
        n = len(inputs)
        out = {k: ref.outputs[k][:n] for k in outputs}
        if version in self.bad_canary:
            out["probabilities"] = out["probabilities"] + 0.1
        if version in self.broken_outputs:
            out["probabilities"] = out["probabilities"].copy()
            out["probabilities"][0, 0] = self.broken_outputs[version]
        return out

    def close(self) -> None:
        pass

    def observe(self) -> None:
        try:
            routing = repo_mod.read_model_config(self.repo, MODEL).routing
        except Exception:
            routing = {}
        self.seen.append((routing, set(self.ready)))


@pytest.fixture
def world(tmp_path: Path) -> Any:
    repo = tmp_path / "repo"
    triton = FakeTriton(repo)
    registry = FakeRegistry()
    exports: list[str] = []
    parity_fails: set[str] = set()
    features_for: dict[str, list[str]] = {}

    def fake_install(settings: Any, client: Any, model: str, version: str, repo_path: Path) -> None:
        if registry.down:  # the export downloads the model from the registry
            raise ServiceUnavailableError(
                f"MLflow download of {model!r} version {version} failed: connection refused"
            )
        if version in parity_fails:
            raise ParityError(f"model {model!r} version {version}: ONNX probabilities differ from XGBoost")
        exports.append(version)
        with repo_mod.staging(repo_path, model, version) as stage:
            x = np.zeros((4, 2), np.float32)
            repo_mod.write_reference(
                stage,
                x,
                {"probabilities": np.full((4, 2), 0.5, np.float32), "label": np.zeros((4, 1), np.int64)},
            )
            features = features_for.get(version, FEATURES)
            meta = {"task": "binary", "n_classes": 2, "features": features, "flavor": "python-ort"}
            meta["files"] = ["model.onnx", "model.py"]
            repo_mod.write_version_metadata(stage, meta)
            repo_mod.install_staged(stage, repo_path, model, version)

    settings = load_settings(
        home=tmp_path, exporter={"repository": str(repo)}, sync={"models": [MODEL], "unload_grace_s": 0}
    )

    class World:
        pass

    w = World()
    w.__dict__.update(
        settings=settings,
        repo=repo,
        triton=triton,
        registry=registry,
        exports=exports,
        parity_fails=parity_fails,
        features_for=features_for,
    )
    w.install = fake_install  # type: ignore[attr-defined]
    w.run = lambda: reconcile_once(  # type: ignore[attr-defined]
        settings, client=registry, triton_client=lambda url, timeout_s: triton, installer=fake_install
    )
    return w


def _routing(w: Any) -> dict[str, str]:
    return repo_mod.read_model_config(w.repo, MODEL).routing


def _routed_always_ready(w: Any) -> None:
    for routing, ready in w.triton.seen:
        assert set(routing.values()) <= ready, (routing, ready)


def test_promotion_rollback_and_retention(world: Any) -> None:
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.registry.aliases = {"champion": "2"}
    assert world.run().ok
    assert _routing(world) == {"champion": "2"} and world.triton.ready == {"1", "2"}
    world.registry.aliases = {"champion": "3"}
    assert world.run().ok
    assert world.triton.ready == {"1", "2", "3"}  # two previous champions kept
    world.registry.aliases = {"champion": "4"}
    assert world.run().ok
    assert world.triton.ready == {"2", "3", "4"}
    assert not repo_mod.version_dir(world.repo, MODEL, 1).exists()
    # rollback: no export, only routing
    world.registry.aliases = {"champion": "3"}
    exports_before = list(world.exports)
    assert world.run().ok
    assert _routing(world) == {"champion": "3"} and world.exports == exports_before
    _routed_always_ready(world)


def test_rollback_moves_to_the_version_the_sync_kept_loaded(world: Any) -> None:
    """One champion history: what ``treeserve rollback`` moves to is what the sync kept for it."""
    from training.gate import rollback

    for v in ("1", "2", "3"):
        world.registry.aliases = {"champion": v}  # moved outside the gate: the sync records it
        assert world.run().ok
    kept = world.run().models[MODEL].retained
    assert kept == ["2", "1"]
    exports_before = list(world.exports)

    back = rollback(world.settings, MODEL, client=world.registry)
    assert back.to_version == kept[0]
    after = world.run()
    assert after.ok and _routing(world) == {"champion": "2"}
    assert world.exports == exports_before, "a rollback only switches the routing"
    # The next rollback would go to v1, and that is what the sync keeps now.
    assert after.models[MODEL].retained == ["1"]
    assert rollback(world.settings, MODEL, client=world.registry).to_version == "1"


def test_second_pass_is_a_no_op(world: Any) -> None:
    world.registry.aliases = {"champion": "1", "challenger": "2"}
    assert world.run().ok
    loads, exports = world.triton.loads, list(world.exports)
    config = (world.repo / MODEL / "config.pbtxt").read_text()
    assert world.run().ok
    assert (world.triton.loads, world.exports) == (loads, exports)
    assert (world.repo / MODEL / "config.pbtxt").read_text() == config


def test_parity_and_canary_failures_keep_the_champion(world: Any) -> None:
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.parity_fails.add("2")
    world.registry.aliases = {"champion": "2"}
    result = world.run()
    assert result.result == "degraded"
    assert _routing(world) == {"champion": "1"}
    assert "champion -> 2 is not served (validation" in result.models[MODEL].message
    # remembered: not retried on the next pass
    world.parity_fails.clear()
    assert world.run().result == "degraded" and "2" not in world.exports

    world.triton.bad_canary.add("3")
    world.registry.aliases = {"champion": "3"}
    result = world.run()
    assert result.models[MODEL].failures["3"].reason == "canary"
    assert _routing(world) == {"champion": "1"} and world.triton.ready == {"1"}
    assert not repo_mod.version_dir(world.repo, MODEL, 3).exists()
    _routed_always_ready(world)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_version_answering_nan_or_inf_fails_the_canary_and_is_not_served(world: Any, value: float) -> None:
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.triton.broken_outputs["2"] = value
    world.registry.aliases = {"champion": "2"}
    result = world.run()
    failure = result.models[MODEL].failures["2"]
    assert failure.reason == "canary" and "NaN or infinite" in failure.message
    assert _routing(world) == {"champion": "1"}


def test_triton_down_aborts_without_touching_routing(world: Any) -> None:
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.registry.aliases = {"champion": "2"}
    world.triton.up = False
    down = world.run()
    assert down.result == "failed" and "unreachable" in down.error
    assert _routing(world) == {"champion": "1"}
    status = json.loads((world.settings.path(world.settings.sync.status_file)).read_text())
    assert status["result"] == "failed"
    # restart: nothing loaded any more, the next pass loads and switches
    world.triton.up, world.triton.ready = True, set()
    assert world.run().ok
    assert _routing(world) == {"champion": "2"} and world.triton.ready == {"1", "2"}


def test_deleting_the_challenger_unloads_it(world: Any) -> None:
    world.registry.aliases = {"champion": "1", "challenger": "2"}
    assert world.run().ok
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    assert _routing(world) == {"champion": "1"} and world.triton.ready == {"1"}


def test_a_version_with_another_feature_contract_is_refused(world: Any) -> None:
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.features_for["2"] = ["a", "b", "c"]
    world.registry.aliases = {"champion": "2"}
    result = world.run()
    failure = result.models[MODEL].failures["2"]
    assert failure.reason == "contract" and "one Triton model serves one contract" in failure.message
    assert _routing(world) == {"champion": "1"} and world.triton.ready == {"1"}


def test_many_servers_route_only_what_every_up_server_serves(world: Any) -> None:
    """Two servers on one repository: installed once, loaded on both; a down one is reported and
    left out of the switch, and the first pass that finds it back (empty) brings it in line."""
    servers = {"a:8000": world.triton, "b:8000": FakeTriton(world.repo)}
    settings = world.settings.model_copy(
        update={"sync": world.settings.sync.model_copy(update={"triton_urls": list(servers)})}
    )

    def run() -> Any:
        return reconcile_once(
            settings,
            client=world.registry,
            triton_client=lambda url, t: servers[url],
            installer=world.install,
        )

    world.registry.aliases = {"champion": "1"}
    assert run().ok
    assert servers["a:8000"].ready == servers["b:8000"].ready == {"1"}
    assert world.exports == ["1"]  # installed once for both

    servers["b:8000"].up = False
    world.registry.aliases = {"champion": "2"}
    down = run()
    assert down.result == "degraded" and "b:8000" in down.error
    assert _routing(world) == {"champion": "2"}  # every *up* server has it READY
    status = json.loads(settings.path(settings.sync.status_file).read_text())
    assert status["servers"]["b:8000"]["up"] is False and status["servers"]["a:8000"]["up"] is True

    servers["b:8000"].up, servers["b:8000"].ready = True, set()  # restarted empty
    assert run().ok
    assert servers["b:8000"].ready == servers["a:8000"].ready == {"1", "2"}
    assert world.exports == ["1", "2"]
    for fake in servers.values():
        for routing, ready in fake.seen:
            if fake.up:
                assert set(routing.values()) <= ready or not ready, (routing, ready)


def test_a_version_not_ready_on_every_server_is_not_routed(world: Any) -> None:
    servers = {"a:8000": world.triton, "b:8000": FakeTriton(world.repo)}
    settings = world.settings.model_copy(
        update={"sync": world.settings.sync.model_copy(update={"triton_urls": list(servers)})}
    )
    world.registry.aliases = {"champion": "1"}

    def run() -> Any:
        return reconcile_once(
            settings,
            client=world.registry,
            triton_client=lambda url, t: servers[url],
            installer=world.install,
        )

    assert run().ok
    servers["b:8000"].bad_canary.add("2")  # b answers differently for version 2
    world.registry.aliases = {"champion": "2"}
    result = run()
    assert not result.ok and _routing(world) == {"champion": "1"}
    assert "b:8000" in result.models[MODEL].failures["2"].message


def test_a_pass_never_deletes_the_last_version_serving_an_alias(world: Any) -> None:
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.triton.ready = set()  # Triton restarted empty, and version 1 now fails its canary
    world.triton.bad_canary.add("1")
    result = world.run()
    assert not result.ok
    assert _routing(world) == {"champion": "1"}  # still routed: serving resumes once it loads
    assert repo_mod.version_dir(world.repo, MODEL, 1).exists()
    assert "champion -> 1 is routed but not served (canary" in result.models[MODEL].message


def test_a_restarted_triton_gets_the_routed_version_first_and_canaried(world: Any) -> None:
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.registry.aliases = {"champion": "2"}
    assert world.run().ok and world.triton.ready == {"1", "2"}  # 1 kept for rollback
    assert world.triton.overrides == []  # nothing lacking: plain loads only
    world.triton.ready = set()  # Triton restarted empty
    world.triton.bad_canary.add("1")  # the kept version now answers wrongly
    result = world.run()
    # The routed version alone, then the rest (an override too: Triton holds the first one).
    assert world.triton.overrides == [{"2"}, {"1", "2"}]
    assert "2" in world.triton.ready
    assert _routing(world) == {"champion": "2"}
    assert result.models[MODEL].failures["1"].reason == "canary"  # every reloaded version canaried
    world.triton.ready = set()
    world.triton.bad_canary = {"2"}  # the routed version loaded first is canaried too
    result = world.run()
    assert result.models[MODEL].failures["2"].reason == "canary" and not result.ok


@pytest.mark.parametrize("fault", ["canary", "triton"])
def test_a_served_version_that_failed_after_a_restart_is_checked_again_by_the_next_pass(
    world: Any, fault: str
) -> None:
    """Level-triggered: a routed version that failed its canary (or did not load) once is not
    written off for ``retry_failed_after_s``; the next pass loads and checks it again."""
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.triton.ready = set()  # restarted empty, and for a while version 1 misbehaves
    (world.triton.bad_canary if fault == "canary" else world.triton.refuse).add("1")
    failed = world.run()
    assert not failed.ok and failed.models[MODEL].failures["1"].reason == fault
    assert _routing(world) == {"champion": "1"}

    world.triton.bad_canary.clear()
    world.triton.refuse.clear()
    exports_before = list(world.exports)
    healed = world.run()
    assert healed.ok, healed.models[MODEL].message
    assert healed.models[MODEL].failures == {} and healed.models[MODEL].message == "in sync"
    assert _routing(world) == {"champion": "1"} and "1" in world.triton.ready
    assert world.exports == exports_before, "no export: the files were kept"


def test_registry_unreachable_mid_sync_keeps_serving_reports_and_heals(world: Any) -> None:
    """MLflow goes away in the middle of a promotion, then for whole passes: Triton keeps serving
    the champion it has, the status file and the metrics name the registry, and the first pass
    after it is back converges."""
    metrics = SyncMetrics()

    def run() -> Any:
        return reconcile_once(
            world.settings,
            client=world.registry,
            triton_client=lambda url, t: world.triton,
            installer=world.install,
            metrics=metrics,
        )

    def status() -> Any:
        return json.loads(world.settings.path(world.settings.sync.status_file).read_text())

    def registry_failures() -> float:
        value = metrics.registry.get_sample_value(
            "treeserve_sync_failures_total", {"model": MODEL, "reason": "registry"}
        )
        return value or 0.0

    world.registry.aliases = {"champion": "1"}
    assert run().ok
    world.registry.aliases = {"champion": "2"}
    real_install = world.install

    def dies_during_export(*args: Any) -> None:
        world.registry.down = True  # the alias was read; the server goes away while v2 is exported
        real_install(*args)

    world.install = dies_during_export
    mid = run()
    assert mid.result == "failed" and "MLflow" in mid.error
    assert _routing(world) == {"champion": "1"} and world.triton.ready == {"1"}
    assert status()["result"] == "failed" and "MLflow" in status()["models"][MODEL]["message"]
    assert registry_failures() == 1

    world.install = real_install
    still_down = run()  # unreachable from the first call of the pass
    assert still_down.result == "failed" and "MLflow registry read" in still_down.error
    assert _routing(world) == {"champion": "1"} and world.triton.ready == {"1"}
    assert registry_failures() == 2
    assert not list((world.repo / ".staging").glob(f"{MODEL}-*")), "no half export left behind"

    world.registry.down = False
    healed = run()
    assert healed.ok, healed.models[MODEL].message
    assert _routing(world) == {"champion": "2"} and world.triton.ready == {"1", "2"}
    assert status()["result"] == "ok"
    _routed_always_ready(world)


def test_a_new_version_is_staged_ahead_so_its_promotion_is_a_routing_switch(world: Any) -> None:
    """``prestage_max`` (default 1): the newest version above the champion is exported, loaded and
    canaried before anyone promotes it; promoting it then exports and loads nothing first."""
    world.registry.versions = ["1"]
    world.registry.aliases = {"champion": "1"}
    assert world.run().ok
    world.registry.versions = ["1", "2", "3"]  # two new versions registered: only the newest is staged
    staged = world.run()
    assert staged.ok and staged.models[MODEL].prestaged == ["3"]
    assert _routing(world) == {"champion": "1"} and world.triton.ready == {"1", "3"}
    assert world.exports == ["1", "3"]

    world.registry.aliases = {"champion": "3"}
    routing_at_load: list[dict[str, str]] = []
    real_load = world.triton.load

    def load(model: str) -> None:
        routing_at_load.append(_routing(world))
        real_load(model)

    world.triton.load = load
    promoted = world.run()
    assert promoted.ok and _routing(world) == {"champion": "3"}
    assert world.exports == ["1", "3"], "no export at promotion"
    assert all(r == {"champion": "3"} for r in routing_at_load), "nothing loaded before the switch"
    assert promoted.models[MODEL].prestaged == []
    _routed_always_ready(world)


def test_prestage_max_zero_stages_nothing_and_a_failed_stage_does_not_degrade(world: Any) -> None:
    world.registry.versions = ["1", "2"]
    world.registry.aliases = {"champion": "1"}
    off = world.settings.model_copy(
        update={"sync": world.settings.sync.model_copy(update={"prestage_max": 0})}
    )
    assert reconcile_once(
        off, client=world.registry, triton_client=lambda url, t: world.triton, installer=world.install
    ).ok
    assert world.exports == ["1"] and world.triton.ready == {"1"}

    world.parity_fails.add("2")
    result = world.run()
    assert result.ok, "a version nobody promoted yet does not make the model out of sync"
    assert result.models[MODEL].failures["2"].reason == "validation"
    assert result.models[MODEL].prestaged == [] and world.triton.ready == {"1"}


def test_a_staged_version_with_another_contract_never_blocks_the_first_champion(world: Any) -> None:
    """Nothing served yet: the champion sets the contract, a staged version that differs is refused."""
    world.features_for["2"] = ["a", "b", "c"]
    world.registry.versions = ["1", "2"]
    world.registry.aliases = {"champion": "1"}
    result = world.run()
    assert result.ok, result.models[MODEL].message
    assert _routing(world) == {"champion": "1"} and world.triton.ready == {"1"}
    failure = result.models[MODEL].failures["2"]
    assert failure.reason == "contract" and "one Triton model serves one contract" in failure.message


def test_a_staged_version_stays_staged_when_the_registry_cannot_list_versions(world: Any) -> None:
    world.registry.versions = ["1", "2"]
    world.registry.aliases = {"champion": "1"}
    assert world.run().models[MODEL].prestaged == ["2"]
    world.registry.search_fails = True
    again = world.run()
    assert again.ok and again.models[MODEL].prestaged == ["2"]
    assert world.triton.ready == {"1", "2"} and world.exports == ["1", "2"]
