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
live there, so ``status``/``stop``/``logs`` work from any process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import (
    CanaryError,
    ModelLoadError,
    TritonNotRunningError,
    TritonStartError,
)
from treeserve import procs
from treeserve import repository as repo_mod

log = logging.getLogger(__name__)

PID_FILE = "triton.pid"
LOG_FILE = "triton.log"
STATE_FILE = "triton.json"


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


@dataclass(frozen=True)
class CanaryResult:
    """A canary inference's outcome."""

    model: str
    version: int
    rows: int
    max_abs_diff: float


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
        self._adopt_state()

    @classmethod
    def from_settings(
        cls,
        settings: Any,
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
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def _adopt_state(self) -> None:
        """When a server from this run_dir is running, talk to it on the ports it really uses."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(self.state_file.read_text())
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
        self.state_file.write_text(
            json.dumps(
                {
                    "pid": proc.pid,
                    "http_port": self.http_port,
                    "grpc_port": self.grpc_port,
                    "metrics_port": self.metrics_port,
                    "repository": str(self.repository),
                    "shm_prefix": shm_prefix,
                    "started_at": time.time(),
                },
                indent=2,
            )
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
            with contextlib.suppress(TritonNotRunningError, ModelLoadError):
                models = self.repository_index()
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

    # ---- repository API -----------------------------------------------------------------
    def repository_index(self) -> list[dict[str, Any]]:
        """``POST /v2/repository/index``: every model/version Triton knows with its state."""
        result = self._request("POST", "/v2/repository/index", {}, what="repository index")
        return list(result or [])

    def load_model(self, model: str, *, timeout_s: float | None = None) -> list[int]:
        """(Re)load ``model`` from the repository and wait until its policy's versions are READY.

        Returns the ready versions. ModelLoadError names Triton's reason when a load fails.
        """
        try:
            wanted = repo_mod.read_model_config(self.repository, model).versions
        except Exception:
            wanted = []
        self._request("POST", f"/v2/repository/models/{model}/load", {}, what=f"load of {model!r}")
        for v in wanted:
            self.wait_version_ready(model, v, timeout_s=timeout_s)
        return [v for v in wanted if self.version_ready(model, v)]

    def unload_model(self, model: str) -> None:
        """Unload every version of ``model``."""
        self._request("POST", f"/v2/repository/models/{model}/unload", {}, what=f"unload of {model!r}")

    def version_ready(self, model: str, version: int | str) -> bool:
        """``GET /v2/models/<m>/versions/<v>/ready`` answers 200."""
        return procs.http_ok(
            f"{self.http_url}/v2/models/{model}/versions/{int(version)}/ready", timeout_s=2.0
        )

    def wait_version_ready(self, model: str, version: int | str, *, timeout_s: float | None = None) -> None:
        """Block until ``model`` ``version`` is READY; ModelLoadError with Triton's reason otherwise."""
        deadline = timeout_s if timeout_s is not None else self.load_timeout_s
        if procs.wait_until(lambda: self.version_ready(model, version), timeout_s=deadline, interval_s=0.1):
            return
        reason = ""
        with contextlib.suppress(TritonNotRunningError, ModelLoadError):
            for entry in self.repository_index():
                if entry.get("name") == model and str(entry.get("version")) == str(version):
                    reason = f"{entry.get('state')}: {entry.get('reason', '')}"
        raise ModelLoadError(
            f"model {model!r} version {version} is not ready in Triton ({reason or 'unknown'})"
        )

    def model_stats(self, model: str) -> dict[str, Any]:
        """``GET /v2/models/<m>/stats`` (inference and execution counts, batch sizes)."""
        return dict(self._request("GET", f"/v2/models/{model}/stats", None, what=f"stats of {model!r}") or {})

    def canary(
        self, model: str, version: int | str, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> CanaryResult:
        """Send the version's ``reference.npz`` inputs over gRPC; CanaryError when outputs differ."""
        reference = repo_mod.read_reference(self.repository, model, version)
        inputs, ref = reference.inputs, dict(reference.outputs)
        cfg = repo_mod.read_model_config(self.repository, model)
        step = max(1, cfg.spec.max_batch_size)
        got: dict[str, list[np.ndarray]] = {name: [] for name in ref}
        for start in range(0, len(inputs), step):
            part = infer_grpc(self.grpc_url, model, version, inputs[start : start + step], list(ref))
            for name in ref:
                got[name].append(part[name])
        worst = 0.0
        for name, want in ref.items():
            have = np.concatenate(got[name]).reshape(want.shape)
            if want.dtype.kind in "iub":
                bad = int(np.sum(have != want))
                if bad:
                    raise CanaryError(
                        f"model {model!r} version {version}: {bad} {name} values differ from the reference"
                    )
                continue
            scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
            diff = float(np.max(np.abs(have.astype(np.float64) - want))) if want.size else 0.0
            worst = max(worst, diff)
            if not diff <= atol + rtol * scale:
                raise CanaryError(
                    f"model {model!r} version {version}: Triton's {name} differ from the reference by {diff:.3g}"
                )
        return CanaryResult(model=model, version=int(version), rows=len(inputs), max_abs_diff=worst)

    # ---- internals ----------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any, *, what: str) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.http_url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.load_timeout_s) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            raise ModelLoadError(f"Triton refused the {what}: {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            raise TritonNotRunningError(
                f"Triton is not running at {self.http_url} ({what}); start it with `treeserve triton start`"
            ) from e
        return json.loads(raw) if raw else None

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


def infer_grpc(
    grpc_url: str,
    model: str,
    version: int | str,
    inputs: np.ndarray,
    outputs: list[str],
    *,
    timeout_s: float = 30.0,
) -> dict[str, np.ndarray]:
    """One gRPC inference of float32 ``inputs`` [n, n_features]; returns {output: array}."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    x = np.ascontiguousarray(inputs, dtype=np.float32)
    client = grpcclient.InferenceServerClient(url=grpc_url)
    try:
        inp = grpcclient.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(
            model,
            [inp],
            model_version=str(int(version)),
            outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
            client_timeout=timeout_s,
        )
    except InferenceServerException as e:
        status = str(e.status() or "")
        if "UNAVAILABLE" in status:
            raise TritonNotRunningError(f"Triton is not running at {grpc_url}: {e.message()}") from e
        raise ModelLoadError(f"inference on {model!r} version {version} failed: {e.message()}") from e
    finally:
        client.close()
    return {n: result.as_numpy(n) for n in outputs}


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
