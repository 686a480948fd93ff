"""A real local Triton Inference Server from ``.venv-triton`` (tritonserver 2.51 of nvidia-pytriton).

Launch recipe (docs/architecture.md, "Triton here and in production"): the backends and caches are
copied out of site-packages into ``<run_dir>/tritonserver`` together with the Python-backend stub
for the venv's Python; the server runs in explicit model-control mode with
``--strict-readiness=false`` (one failed load must not turn the whole server unready), binds HTTP,
gRPC and metrics to 127.0.0.1 and uses a unique shared-memory prefix so several servers can share a
machine. The Python-backend stub embeds the venv's interpreter: its ``bin`` goes first on ``PATH``
(the stub's Python finds ``pyvenv.cfg`` through it) and its site-packages on ``PYTHONPATH`` (belt
and braces), so ``model.py`` imports numpy and onnxruntime from ``.venv-triton``, never from the app
venv.

One server per ``run_dir``: ``triton.pid``, ``triton.log`` and ``triton.json`` (ports, repository)
live there, so ``status``/``stop``/``logs`` work from any process. Talking to the server (index,
load, infer, canary) goes through ``admin``, the one ``TritonAdminClient``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.canary import CanaryResult
from exporter.errors import TritonControlError, TritonNotRunningError, TritonStartError
from exporter.settings import ExporterConfig
from exporter.triton_admin import TritonAdminClient
from treeserve import procs
from treeserve import repository as repo_mod
from treeserve.errors import TreeserveError
from treeserve.local_triton import STATE_FILE, read_state, write_state

log = logging.getLogger(__name__)

PID_FILE = "triton.pid"
LOG_FILE = "triton.log"


@dataclass(frozen=True)
class TritonStatus:
    """What ``status`` found."""

    running: bool
    pid: int | None
    live: bool
    ready: bool
    http_url: str
    grpc_url: str
    metrics_url: str
    repository: str
    models: list[dict[str, Any]] = field(default_factory=list)
    """Repository index entries: name, version, state, reason."""


class TritonServer:
    """Start, stop and talk to one local Triton server."""

    def __init__(
        self,
        *,
        venv: Path,
        repository: Path,
        run_dir: Path,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        startup_timeout_s: float = 60.0,
        load_timeout_s: float = 60.0,
    ) -> None:
        self.venv = Path(venv).absolute()
        self.repository = Path(repository).absolute()
        self.run_dir = Path(run_dir).absolute()
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.startup_timeout_s = startup_timeout_s
        self.load_timeout_s = load_timeout_s
        self._admin: TritonAdminClient | None = None
        self._adopt_state()

    @classmethod
    def from_settings(
        cls,
        settings: ExporterConfig,
        *,
        repository: Path | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        run_dir: Path | None = None,
    ) -> TritonServer:
        """A server described by ``settings.triton`` (+ ``settings.exporter.repository``), flags win."""
        t = settings.triton
        return cls(
            venv=resolve_venv(settings.path(t.venv), t.venv),
            repository=Path(repository) if repository else settings.path(settings.exporter.repository),
            run_dir=Path(run_dir) if run_dir else settings.path(t.run_dir),
            host=t.host,
            http_port=http_port or t.http_port,
            grpc_port=grpc_port or t.grpc_port,
            metrics_port=metrics_port or t.metrics_port,
            startup_timeout_s=t.startup_timeout_s,
            load_timeout_s=t.load_timeout_s,
        )

    # ---- locations ----------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.run_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def state_file(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<http_port>``."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<grpc_port>`` (the form tritonclient.grpc expects)."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        """``grpc://127.0.0.1:<grpc_port>``: the admin client loads models over gRPC, which leaves
        Triton's HTTP inference answering (a load over HTTP silences the HTTP port until it ends)."""
        return f"grpc://{self.grpc_url}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def _adopt_state(self) -> None:
        """When a server from this run_dir is running, talk to it on the ports it really uses."""
        if self.pid() is None:
            return
        state = read_state(self.run_dir)
        if state is None:
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):
            self.http_port = int(state["http_port"])
            self.grpc_port = int(state["grpc_port"])
            self.metrics_port = int(state["metrics_port"])
            self.repository = Path(state["repository"])

    # ---- process ------------------------------------------------------------------------
    def pid(self) -> int | None:
        """PID of the running server started from this run_dir, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if procs.pid_alive(pid) else None

    def start(self) -> int:
        """Start the server and wait until it is ready; return its PID.

        Already running (PID file alive): returns that PID. Raises TritonStartError with the reason
        (venv missing, port taken, server exited: last log lines).
        """
        running = self.pid()
        if running is not None:
            if self.is_ready():
                log.info("triton already running", extra={"pid": running})
                return running
            raise TritonStartError(
                f"a Triton process (pid {running}) from {self.run_dir} is running but not ready; "
                "`treeserve triton stop` first"
            )
        self._forget_admin()  # its pooled connections belong to a process that is gone
        layout = self._prepare()
        for what, port in (
            ("HTTP", self.http_port),
            ("gRPC", self.grpc_port),
            ("metrics", self.metrics_port),
        ):
            if procs.port_in_use(port, self.host):
                raise TritonStartError(
                    f"{what} port {port} on {self.host} is already in use; pick another with --{what.lower()}-port"
                )
        try:
            self.repository.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TritonStartError(
                f"model repository {self.repository} cannot be created: {e.strerror}"
            ) from e

        shm_prefix = f"treeserve-{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        cmd = [
            str(layout["tritonserver"]),
            f"--model-repository={self.repository}",
            f"--backend-directory={layout['backends']}",
            f"--cache-directory={layout['caches']}",
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=1048576",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--model-control-mode=explicit",
            "--strict-readiness=false",
            "--exit-timeout-secs=10",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--log-verbose=0",
        ]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("a") as f:
            f.write(f"\n=== treeserve: starting tritonserver {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n")
        proc = procs.start_background(cmd, log_file=self.log_file, env=self._env(layout), cwd=self.run_dir)
        self.pid_file.write_text(f"{proc.pid}\n")
        write_state(
            self.run_dir,
            {
                "pid": proc.pid,
                "http_port": self.http_port,
                "grpc_port": self.grpc_port,
                "metrics_port": self.metrics_port,
                "repository": str(self.repository),
                "shm_prefix": shm_prefix,
                "started_at": time.time(),
            },
        )
        ok = procs.wait_until(
            self.is_ready, timeout_s=self.startup_timeout_s, interval_s=0.1, alive=lambda: proc.poll() is None
        )
        if not ok:
            exited = proc.poll() is not None
            procs.stop_pid(proc.pid, timeout_s=5.0)
            self._cleanup(shm_prefix)
            tail = self._log_errors(offset)
            why = "exited during start-up" if exited else f"was not ready after {self.startup_timeout_s:g} s"
            raise TritonStartError(f"tritonserver {why}: {tail or 'see ' + str(self.log_file)}")
        log.info("triton ready", extra={"pid": proc.pid, "http": self.http_url, "grpc": self.grpc_url})
        return proc.pid

    def stop(self, *, timeout_s: float = 15.0) -> bool:
        """Stop the server (SIGTERM, SIGKILL after ``timeout_s``); False when none was running."""
        pid = self.pid()
        state: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(self.state_file.read_text())
        if pid is not None:
            procs.stop_pid(pid, timeout_s=timeout_s)
        self._forget_admin()
        self.pid_file.unlink(missing_ok=True)
        self._cleanup(str(state.get("shm_prefix", "")))
        return pid is not None

    def status(self) -> TritonStatus:
        """Process, health and the repository index (when it answers)."""
        pid = self.pid()
        live = pid is not None and procs.http_ok(f"{self.http_url}/v2/health/live")
        ready = live and self.is_ready()
        models: list[dict[str, Any]] = []
        if live:
            with contextlib.suppress(TritonControlError):
                models = self.admin.repository_index()
        return TritonStatus(
            running=pid is not None,
            pid=pid,
            live=live,
            ready=ready,
            http_url=self.http_url,
            grpc_url=self.grpc_url,
            metrics_url=self.metrics_url,
            repository=str(self.repository),
            models=models,
        )

    def is_ready(self) -> bool:
        """``/v2/health/ready`` answers 200."""
        return procs.http_ok(f"{self.http_url}/v2/health/ready", timeout_s=1.0)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the server is ready; TritonNotRunningError otherwise."""
        if not procs.wait_until(self.is_ready, timeout_s=timeout_s or self.startup_timeout_s, interval_s=0.1):
            raise TritonNotRunningError(f"Triton at {self.http_url} is not ready")

    def logs(self, *, lines: int = 50) -> str:
        """The last ``lines`` lines of the server log."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 200 * lines))
                data = f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    # ---- talking to the server ------------------------------------------------------------
    @property
    def admin(self) -> TritonAdminClient:
        """The admin client for this server (index, load/unload, readiness, infer, stats, canary)."""
        if self._admin is None or self._admin.url != self.admin_url:
            self._admin = TritonAdminClient(self.admin_url, timeout_s=self.load_timeout_s)
        return self._admin

    def _forget_admin(self) -> None:
        """Drop the admin client (a new server process gets a new client, not stale sockets)."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None

    def load_model(self, model: str, *, timeout_s: float | None = None) -> list[int]:
        """(Re)load ``model`` and wait until the versions its ``config.pbtxt`` lists are READY.

        Returns the ready versions. RepositoryError names a config this server's repository cannot
        parse; ModelLoadError names Triton's reason when a load fails.
        """
        try:
            wanted = repo_mod.read_model_config(self.repository, model).versions
        except repo_mod.ModelNotInRepositoryError:
            wanted = []  # Triton names what is missing (or that it is not running)
        self.admin.load(model, wait_for=wanted, timeout_s=timeout_s)
        return sorted(int(v) for v in self.admin.ready_versions(model))

    def load_repository(self) -> dict[str, list[int] | str]:
        """Load every model of the repository (the versions its config lists, routed ones included).

        Returns model -> ready versions, or the reason a model could not be loaded: one bad model
        does not keep the others from serving.
        """
        loaded: dict[str, list[int] | str] = {}
        for model in repo_mod.list_models(self.repository):
            try:
                loaded[model] = self.load_model(model)
            except TreeserveError as e:
                loaded[model] = str(e)
        return loaded

    def canary(
        self, model: str, version: int | str, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> CanaryResult:
        """Send the version's ``reference.npz`` inputs to Triton; CanaryError when the outputs differ.

        The version's explainer companion (when it has one) must give its stored contributions too.
        """
        cfg = repo_mod.read_model_config(self.repository, model)
        result = self.admin.canary(
            model,
            version,
            repo_mod.read_reference(self.repository, model, version),
            batch_rows=cfg.spec.max_batch_size,
            atol=atol,
            rtol=rtol,
        )
        if int(version) in repo_mod.explainer_versions(self.repository, model):
            self.admin.explainer_canary(
                model,
                version,
                repo_mod.read_reference(self.repository, repo_mod.explainer_name(model), version),
                batch_rows=cfg.spec.max_batch_size,
            )
        return result

    # ---- internals ----------------------------------------------------------------------
    def _prepare(self) -> dict[str, Path]:
        """Check the venv and lay out backends/caches/stub under run_dir (once per nvidia-pytriton build)."""
        site = _site_packages(self.venv)
        pkg = site / "pytriton" / "tritonserver"
        binary = pkg / "bin" / "tritonserver"
        if not binary.is_file():
            raise TritonStartError(
                f"Triton venv {self.venv} has no tritonserver (expected {binary}); run `make venv-triton`"
            )
        py_version = _venv_python_version(self.venv)
        stub = pkg / "python_backend_stubs" / py_version / "triton_python_backend_stub"
        if not stub.is_file():
            raise TritonStartError(f"no Python-backend stub for Python {py_version} in {pkg}")
        target = self.run_dir / "tritonserver"
        stamp = target / ".source"
        source_id = f"{binary.stat().st_mtime_ns}:{binary.stat().st_size}:{py_version}"
        if not (stamp.is_file() and stamp.read_text() == source_id):
            staging = self.run_dir / f".tritonserver-{uuid.uuid4().hex[:8]}"
            staging.mkdir(parents=True)
            shutil.copytree(pkg / "backends", staging / "backends")
            shutil.copytree(pkg / "caches", staging / "caches")
            shutil.copy2(stub, staging / "backends" / "python" / "triton_python_backend_stub")
            (staging / ".source").write_text(source_id)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        return {
            "tritonserver": binary,
            "backends": target / "backends",
            "caches": target / "caches",
            "site": site,
        }

    def _env(self, layout: dict[str, Path]) -> dict[str, str]:
        env = dict(os.environ)
        home = _venv_home(self.venv)
        libs = [str(home.parent / "lib"), str(layout["site"] / "nvidia_pytriton.libs")]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(libs)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONPATH"] = str(layout["site"])
        env["VIRTUAL_ENV"] = str(self.venv)
        # The app's variables must not leak into the stub's interpreter.
        for key in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"):
            env.pop(key, None)
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def _log_errors(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("===")]
        errors = [ln for ln in lines if ln.startswith("E") or "error" in ln.lower() or "failed" in ln.lower()]
        return " | ".join((errors or lines)[-3:])

    @staticmethod
    def _cleanup(shm_prefix: str) -> None:
        if not shm_prefix:
            return
        shm = Path("/dev/shm")
        if shm.is_dir():
            for p in shm.glob(f"{shm_prefix}*"):
                with contextlib.suppress(OSError):
                    p.unlink()


def resolve_venv(resolved: Path, configured: Path) -> Path:
    """The Triton venv: the configured path, else (relative default missing) the checkout's own."""
    if resolved.is_dir() or Path(configured).is_absolute():
        return resolved
    checkout = Path(__file__).resolve().parents[1] / configured
    return checkout if checkout.is_dir() else resolved


def _site_packages(venv: Path) -> Path:
    if not venv.is_dir():
        raise TritonStartError(f"Triton venv {venv} is missing; run `make venv-triton`")
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise TritonStartError(f"Triton venv {venv} has no site-packages; run `make venv-triton`")
    return found[-1]


def _pyvenv(venv: Path) -> dict[str, str]:
    cfg: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                cfg[k.strip()] = v.strip()
    return cfg


def _venv_python_version(venv: Path) -> str:
    version = _pyvenv(venv).get("version") or _pyvenv(venv).get("version_info", "")
    if version:
        return ".".join(version.split(".")[:2])
    return _site_packages(venv).parent.name.removeprefix("python")


def _venv_home(venv: Path) -> Path:
    """The base interpreter's ``bin`` directory (its ``../lib`` holds libpython)."""
    home = _pyvenv(venv).get("home")
    if home:
        return Path(home)
    return (venv / "bin" / "python3").resolve().parent
