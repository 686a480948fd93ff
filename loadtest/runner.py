"""The headless runner: one bounded Locust run in a child process, read back into a summary.

Locust runs as ``python -m locust --headless`` in its own process: its gevent monkey-patching
then never touches the caller (``treeserve demo`` has MLflow, gRPC and threads loaded), and the
same locustfile serves local, ``--processes`` and distributed runs. The child writes Locust's
JSON (final totals), CSV and HTML report plus a fine latency histogram into the run's folder.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadtest import locustfile_path
from loadtest.errors import LoadtestConfigError, LoadtestRunError
from loadtest.report import (
    FINE_HISTOGRAM_JSON,
    STATS_JSON,
    LoadtestSummary,
    evaluate_slo,
    new_report_dir,
    read_summary,
    top_failure,
)
from loadtest.settings import LoadtestConfig
from loadtest.workload import API_KEY_ENV, HISTOGRAM_ENV, TIMEOUT_ENV, WORKLOAD_ENV, Workload
from treeserve.local_triton import local_triton

log = logging.getLogger(__name__)

USER_CLASS = {"gateway": "GatewayHttpUser", "gateway-grpc": "GatewayGrpcUser", "triton": "TritonGrpcUser"}
STARTUP_GRACE_S = 90.0
"""Extra wall time allowed beyond the run time (start-up, stop, report writing)."""
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


@dataclass(frozen=True)
class LoadtestResult:
    """One finished run: where its reports are, what it measured, which objectives it missed."""

    target: str
    host: str
    users: int
    spawn_rate: float
    duration_s: float
    report_dir: Path
    summary: LoadtestSummary
    slo_violations: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every objective that was set was met."""
        return not self.slo_violations

    @property
    def json_path(self) -> Path:
        return self.report_dir / STATS_JSON

    @property
    def html_path(self) -> Path:
        return self.report_dir / "report.html"

    @property
    def csv_prefix(self) -> Path:
        return self.report_dir / "stats"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (written as ``summary.json`` next to Locust's reports)."""
        return {
            "target": self.target,
            "host": self.host,
            "users": self.users,
            "spawn_rate": self.spawn_rate,
            "duration_s": self.duration_s,
            "report_dir": str(self.report_dir),
            "passed": self.passed,
            "slo_violations": self.slo_violations,
            "summary": self.summary.to_dict(),
            "command": self.command,
        }


# ---- pure helpers --------------------------------------------------------------------------


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``30``, ``30s``, ``2m``, ``1m30s``, ``1h``; must be positive."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        m = _DURATION.match(text.strip().lower())
        if not text.strip() or not m or not any(m.groups()):
            raise LoadtestConfigError(f"bad duration {text!r} (use e.g. 30s, 2m, 1m30s)")
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s
    if seconds <= 0:
        raise LoadtestConfigError(f"duration must be positive, got {text!r}")
    return seconds


def host_of(url: str) -> str:
    """The host name of ``http://h:p``, ``grpc://h:p``, ``h:p`` or ``[::1]:p``."""
    if "://" not in url:
        url = "tcp://" + url
    host = urlsplit(url).hostname
    if not host:
        raise LoadtestConfigError(f"cannot read a host from {url!r}")
    return host


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(url: str, allowed_hosts: list[str]) -> str:
    """Refuse targets that are neither loopback nor explicitly allowed; returns the host."""
    host = host_of(url)
    if is_loopback(host) or host.lower() in {h.lower() for h in allowed_hosts}:
        return host
    raise LoadtestConfigError(
        f"refusing to load-test {host!r}: only loopback hosts are allowed unless listed in "
        "TREESERVE_LOADTEST__ALLOWED_HOSTS (a JSON list)"
    )


def default_host(settings: LoadtestConfig, target: str) -> str:
    """Where ``target`` listens according to the settings."""
    lt = settings.loadtest

    def local(h: str) -> str:
        return "127.0.0.1" if h in ("0.0.0.0", "", "::") else h

    if target == "gateway":
        return lt.gateway_url or f"http://{local(settings.gateway.host)}:{settings.gateway.port}"
    if target == "gateway-grpc":
        return lt.gateway_grpc_url or f"{local(settings.gateway.host)}:{settings.gateway.grpc_port}"
    if target == "triton":
        ep = local_triton(settings)
        return lt.triton_grpc_url or f"{local(ep.host)}:{ep.grpc_port}"
    raise LoadtestConfigError(f"unknown target {target!r} (expected one of {', '.join(USER_CLASS)})")


def locust_command(
    *,
    target: str,
    host: str,
    users: int,
    spawn_rate: float,
    duration_s: float,
    report_dir: Path,
    processes: int = 1,
) -> list[str]:
    """The headless ``locust`` command line for one run."""
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile_path()),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        f"{spawn_rate:g}",
        "--run-time",
        f"{max(1, round(duration_s))}s",
        "--host",
        host,
        "--json-file",
        str(report_dir / Path(STATS_JSON).stem),
        "--csv",
        str(report_dir / "stats"),
        "--html",
        str(report_dir / "report.html"),
        "--only-summary",
        "--stop-timeout",
        "5",
        "--loglevel",
        "WARNING",
    ]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    cmd.append(USER_CLASS[target])
    return cmd


# ---- the run -------------------------------------------------------------------------------


def run_loadtest(
    settings: LoadtestConfig,
    *,
    target: str = "gateway",
    users: int | None = None,
    spawn_rate: float | None = None,
    duration: str | float | None = None,
    slo_p99_ms: float | None = None,
    max_error_rate: float | None = None,
    host: str | None = None,
    entities_file: Path | None = None,
    workload: Workload | None = None,
    report_dir: Path | None = None,
    processes: int | None = None,
) -> LoadtestResult:
    """Run one headless Locust test against ``target`` and return its summary and SLO verdicts.

    Unset arguments come from ``settings.loadtest``. Reports land in
    ``<reports_dir>/<UTC timestamp>/`` (or ``report_dir``): ``stats.json`` (Locust's final totals),
    ``stats_*.csv``, ``report.html``, ``latency_histogram.json``, ``summary.json``, ``locust.log``.
    Raises ``LoadtestConfigError`` for bad input and ``LoadtestRunError`` when Locust produced no
    report; an SLO miss is *returned* (``result.slo_violations``), not raised.
    """
    from loadtest.prepare import build_workload
    from loadtest.target import check_target

    lt = settings.loadtest
    if target not in USER_CLASS:
        raise LoadtestConfigError(f"unknown target {target!r} (expected one of {', '.join(USER_CLASS)})")
    users = users if users is not None else lt.users
    spawn_rate = spawn_rate if spawn_rate is not None else lt.spawn_rate
    if users < 1 or spawn_rate <= 0:
        raise LoadtestConfigError("--users must be >= 1 and --spawn-rate > 0")
    duration_s = parse_duration(duration if duration is not None else lt.duration)
    slo_p99_ms = slo_p99_ms if slo_p99_ms is not None else lt.slo_p99_ms
    max_error_rate = max_error_rate if max_error_rate is not None else lt.max_error_rate
    host = host or default_host(settings, target)
    check_host(host, list(lt.allowed_hosts))
    workload = workload or build_workload(settings, target=target, entities_file=entities_file)
    check_target(target, host, workload)

    if report_dir is None:
        report_dir = new_report_dir(settings.path(lt.reports_dir))
    report_dir.mkdir(parents=True, exist_ok=True)
    workload_path = workload.save(report_dir / "workload.json")
    cmd = locust_command(
        target=target,
        host=host,
        users=users,
        spawn_rate=spawn_rate,
        duration_s=duration_s,
        report_dir=report_dir,
        processes=processes if processes is not None else lt.processes,
    )
    env = dict(os.environ)
    env["TREESERVE_HOME"] = str(settings.home)
    env[WORKLOAD_ENV] = str(workload_path)
    env[HISTOGRAM_ENV] = str(report_dir / FINE_HISTOGRAM_JSON)
    env[TIMEOUT_ENV] = str(lt.request_timeout_s)
    api_key = lt.api_key or (settings.gateway.api_keys[0] if settings.gateway.api_keys else "")
    if api_key:
        env[API_KEY_ENV] = api_key
    env.setdefault("OMP_NUM_THREADS", "1")

    log.info(
        "loadtest target=%s host=%s users=%d duration_s=%.0f reports=%s",
        target,
        host,
        users,
        duration_s,
        report_dir,
    )
    log_path = report_dir / "locust.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(settings.home),
        )
        try:
            proc.wait(timeout=duration_s + STARTUP_GRACE_S)
        except subprocess.TimeoutExpired:
            from treeserve.procs import stop_pid

            stop_pid(proc.pid, group=False)
            raise LoadtestRunError(
                f"Locust did not finish within {duration_s + STARTUP_GRACE_S:.0f} s (see {log_path})"
            ) from None
    if not (report_dir / STATS_JSON).exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise LoadtestRunError(
            f"Locust exited with code {proc.returncode} and no report: {' | '.join(tail) or 'no output'} (see {log_path})"
        )
    summary = read_summary(report_dir)
    violations = evaluate_slo(summary, slo_p99_ms=slo_p99_ms, max_error_rate=max_error_rate)
    if summary.failures and (error := top_failure(report_dir)):
        violations = (
            [*violations[:-1], f"{violations[-1]}; most frequent error: {error}"] if violations else []
        )
    result = LoadtestResult(
        target=target,
        host=host,
        users=users,
        spawn_rate=spawn_rate,
        duration_s=duration_s,
        report_dir=report_dir,
        summary=summary,
        slo_violations=violations,
        command=cmd,
    )
    (report_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result
