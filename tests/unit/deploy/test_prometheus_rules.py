"""Prometheus recording and alerting rules, checked and unit-tested with the real ``promtool``.

``promtool`` comes with the Debian package ``prometheus`` (``.ci/run`` installs it); the tests
fail, not skip, without it. Besides promtool's own verdicts: every alert is exercised both ways by
the rule unit tests, carries severity and annotations, links to its runbook section, and reads
only metrics that treeserve, Triton or Prometheus export.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from tests.unit.deploy.conftest import DEPLOY, ROOT, command_of
from tests.unit.deploy.test_observability import (
    TRITON_METRICS,
    drift_series,
    gateway_series,
    metric_names,
    sync_series,
)
from tests.unit.docs.test_documented_commands import commands, shell_lines

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules"
RULE_TESTS = RULES / "tests"
RUNBOOKS = ROOT / "docs" / "operations" / "runbooks.md"
SEVERITIES = {"critical", "warning"}

# Metrics a rule may read before the code that exports them has landed (the realtime feature
# view's age at prediction time, with a `view` label).
NOT_YET_EXPORTED: set[str] = set()


def promtool() -> str:
    """Path of the promtool binary; the test fails when there is none."""
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is not installed (apt-get install -y prometheus); it checks the alert rules")
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, cwd=ROOT, timeout=240, check=False
    )


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.yml"))


def all_rules() -> list[dict[str, Any]]:
    return [r for f in rule_files() for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in all_rules() if "alert" in r}


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", RUNBOOKS.read_text(), re.M)}


# ---- promtool ---------------------------------------------------------------------------


def test_rule_files_pass_promtool_check() -> None:
    files = rule_files()
    assert {f.name for f in files} >= {"recording.yml", "alerts.yml"}
    proc = run_promtool("check", "rules", *map(str, files))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_unit_tests_pass() -> None:
    files = rule_test_files()
    assert files
    proc = run_promtool("test", "rules", *map(str, files))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(files), proc.stdout


def test_rule_unit_tests_load_every_rule_file_recordings_first() -> None:
    # Without group_eval_order promtool evaluates the groups of a step in a random order: an
    # alert reading a recording could see the previous step's value, or none (flaky tests).
    groups = [g["name"] for f in rule_files() for g in yaml.safe_load(f.read_text())["groups"]]
    recording = [g["name"] for g in yaml.safe_load((RULES / "recording.yml").read_text())["groups"]]
    for test_file in rule_test_files():
        spec = yaml.safe_load(test_file.read_text())
        loaded = {(test_file.parent / f).resolve() for f in spec["rule_files"]}
        assert loaded == {f.resolve() for f in rule_files()}, test_file.name
        order = spec.get("group_eval_order", [])
        assert sorted(order) == sorted(groups), test_file.name
        assert order[: len(recording)] == recording, test_file.name


def test_prometheus_config_loads_every_rule_file(compose: dict[str, Any]) -> None:
    proc = run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    loaded = {p.resolve() for pattern in config["rule_files"] for p in PROMETHEUS.glob(pattern)}
    assert loaded == {f.resolve() for f in rule_files()}
    # In compose the patterns resolve next to /etc/prometheus/prometheus.yml: the rules folder
    # must be mounted there.
    service = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in service["volumes"]}
    config_path = next(a for a in command_of(service) if a.startswith("--config.file=")).split("=", 1)[1]
    for pattern in config["rule_files"]:
        folder = str(Path(config_path).parent / Path(pattern).parent)
        assert mounts.get(folder) == RULES, f"{folder} is not the mounted rules folder: {mounts}"


# ---- what the rules promise -----------------------------------------------------------------


def test_score_distribution_is_recorded_per_model_and_version() -> None:
    recorded = {r["record"]: r["expr"] for r in all_rules() if "record" in r}
    assert "ml:churn_prediction:score_mean_1h" in recorded
    for name in ("score_mean_1h", "score_p50_1h", "score_p90_1h", "score_p99_1h"):
        expr = recorded[f"ml:model_version:{name}"]
        assert "treeserve_gateway_score" in expr or "ml:model_version:" in expr
    assert "by (model, version)" in recorded["ml:model_version:score_mean_1h"]


def test_every_alert_fires_and_stays_silent_in_the_rule_tests() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for test_file in rule_test_files():
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = set(alerts())
    assert names - fired == set(), f"no test where these fire: {sorted(names - fired)}"
    assert names - silent == set(), f"no test where these stay silent: {sorted(names - silent)}"
    assert (fired | silent) <= names, f"tests name unknown alerts: {sorted((fired | silent) - names)}"


def test_issue_alerts_exist() -> None:
    wanted = {
        "TreeserveScoreMeanShift",
        "TreeserveGatewayHighErrorRate",
        "TreeserveGatewayLatencyHigh",
        "TreeserveTritonQueueTimeHigh",
        "TreeserveSyncOutOfSync",
        "TreeserveSyncFailing",
        "TreeserveDriftShareHigh",
        "TreeservePredictionLogWriteFailures",
        "TreeserveRealtimeFeaturesStale",
    }
    assert wanted <= set(alerts()), sorted(wanted - set(alerts()))
    assert "offset 7d" in alerts()["TreeserveScoreMeanShift"]["expr"]
    triton = alerts()["TreeserveTritonQueueTimeHigh"]["expr"]
    assert "nv_inference_queue_duration_us" in triton and "nv_inference_request_success" in triton


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alert_has_severity_annotations_and_runbook(name: str) -> None:
    rule = alerts()[name]
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    path, _, anchor = annotations["runbook_url"].partition("#")
    assert ROOT / path == RUNBOOKS
    assert anchor == github_anchor(name), "one runbook section per alert, named after it"
    assert anchor in runbook_anchors(), f"{RUNBOOKS.name} has no section #{anchor}"


def test_runbook_sections_are_alerts() -> None:
    sections = re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.M)
    assert sorted(sections) == sorted(alerts())
    for section in re.split(r"^## ", RUNBOOKS.read_text(), flags=re.M)[1:]:
        for part in ("**Meaning.**", "**Check.**", "**Fix.**"):
            assert part in section, f"{section.splitlines()[0]}: no {part}"


def test_rules_read_only_exported_metrics(tmp_path: Path) -> None:
    known = gateway_series() | sync_series() | drift_series(tmp_path) | TRITON_METRICS
    used = set().union(*(metric_names(r["expr"]) for r in all_rules()))
    assert used
    assert used - known <= NOT_YET_EXPORTED, (
        f"not exported by anything: {sorted(used - known - NOT_YET_EXPORTED)}"
    )


def test_rules_name_only_scrape_jobs_that_exist(prometheus_config: dict[str, Any]) -> None:
    jobs = {j["job_name"] for j in prometheus_config["scrape_configs"]}
    named = {m for r in all_rules() for m in re.findall(r'job="([^"]+)"', r["expr"])}
    assert named
    assert named <= jobs, f"rules select scrape jobs prometheus.yml does not define: {sorted(named - jobs)}"


# ---- runbook commands -----------------------------------------------------------------------


def _treeserve_commands(page: Path) -> list[list[str]]:
    """The arguments of every ``treeserve …`` invocation on a page, also inside ``docker compose
    exec/run …`` and inline code (the docs tests check only shell blocks that start with it)."""
    text = page.read_text()
    lines = shell_lines(page) + re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text)
    return [
        cmd[cmd.index("treeserve") + 1 :] for line in lines for cmd in commands(line) if "treeserve" in cmd
    ]


def _parse(cli: Any, argv: list[str]) -> str:
    """Parse argv down to the leaf command as the CLI would, without running anything; its name.

    Typer ships its own copy of click, so groups are recognised by ``resolve_command`` and errors
    by ``format_message`` rather than by click's classes.
    """
    ctx = cli.make_context("treeserve", list(argv))
    path = ["treeserve"]
    while hasattr(ctx.command, "resolve_command"):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            break
        name, sub, args = ctx.command.resolve_command(ctx, rest)
        path.append(name)
        ctx = sub.make_context(name, args, parent=ctx)
    return " ".join(path)


def test_runbook_treeserve_commands_parse() -> None:
    from treeserve_app.cli import app

    cli = typer.main.get_command(app)
    invocations = [argv for argv in _treeserve_commands(RUNBOOKS) if argv and argv[0] != "…"]
    assert len(invocations) >= 10
    # The parser really checks: a misspelt option, a missing argument, an unknown command fail.
    for bad in (["sync", "status", "--jsn"], ["rollback"], ["synk", "status"]):
        with pytest.raises(Exception, match=r"(?i)no such|missing"):
            _parse(cli, bad)
    for argv in invocations:
        try:
            _parse(cli, argv)
        except Exception as e:
            message = e.format_message() if hasattr(e, "format_message") else repr(e)
            pytest.fail(f"runbook command `treeserve {shlex.join(argv)}` does not parse: {message}")
