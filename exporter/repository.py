"""The Triton model repository on disk: read configs, write them atomically, stage and install versions.

Layout (BRIEF contract #4)::

    <repo>/<model>/config.pbtxt
    <repo>/<model>/<version>/model.onnx | model.py | treeserve.json | reference.npz
    <repo>/.staging/                     work area on the same filesystem (Triton never reads it)

Every write is a rename: a version is built in ``.staging`` and moved into place with
``os.replace``; ``config.pbtxt`` is written to a temporary file next to it and replaced. A
version directory is complete when it holds ``treeserve.json`` (written last in staging).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.config import TritonModelSpec, parse_config, render_config
from exporter.errors import ModelNotInRepositoryError, RepositoryError
from treeserve import contract

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
STAGING_DIR = ".staging"


@dataclass(frozen=True)
class RepositoryModel:
    """A model's ``config.pbtxt`` as read from the repository."""

    spec: TritonModelSpec
    flavor: str
    path: Path
    """The model directory ``<repo>/<model>``."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def routing(self) -> dict[str, str]:
        """Alias -> version string, e.g. {"champion": "3"}."""
        return dict(self.spec.routing)

    @property
    def features(self) -> list[str]:
        return list(self.spec.features)

    @property
    def versions(self) -> list[int]:
        """Versions in ``version_policy`` (what Triton loads)."""
        return list(self.spec.versions)

    @property
    def entity_keys(self) -> list[str]:
        return list(self.spec.entity_keys)

    @property
    def feature_service(self) -> str:
        return self.spec.feature_service

    @property
    def task(self) -> str:
        return self.spec.task

    def version_for(self, alias: str) -> str | None:
        """The version string an alias routes to, or None."""
        return self.spec.routing.get(alias)


def model_dir(repo: Path, model: str) -> Path:
    """``<repo>/<model>``."""
    return Path(repo) / model


def version_dir(repo: Path, model: str, version: int | str) -> Path:
    """``<repo>/<model>/<version>``."""
    return Path(repo) / model / str(int(version))


def read_model_config(repo: Path, model: str) -> RepositoryModel:
    """Parse ``<repo>/<model>/config.pbtxt`` (routing, features, versions, entity keys, service)."""
    path = model_dir(repo, model) / CONFIG_FILE
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise ModelNotInRepositoryError(
            f"model {model!r} is not in the repository {repo} (no {path.name})"
        ) from e
    except OSError as e:
        raise RepositoryError(f"cannot read {path}: {e.strerror or e}") from e
    spec, flavor = parse_config(text)
    return RepositoryModel(spec=spec, flavor=flavor, path=path.parent)


def list_models(repo: Path) -> list[str]:
    """Models that have a ``config.pbtxt`` in ``repo``."""
    repo = Path(repo)
    if not repo.is_dir():
        return []
    return sorted(
        p.name for p in repo.iterdir() if (p / CONFIG_FILE).is_file() and not p.name.startswith(".")
    )


def installed_versions(repo: Path, model: str) -> list[int]:
    """Complete version directories of ``model`` (those holding ``treeserve.json``), ascending."""
    base = model_dir(repo, model)
    if not base.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in base.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / contract.VERSION_METADATA_FILE).is_file()
    )


def write_config(repo: Path, spec: TritonModelSpec, flavor: str) -> Path:
    """Render ``spec`` and write ``<repo>/<model>/config.pbtxt`` atomically (temp file + replace)."""
    text = render_config(spec, flavor)
    target = model_dir(repo, spec.name) / CONFIG_FILE
    ensure_writable(repo)
    target.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(target, text)
    log.info("wrote config", extra={"model": spec.name, "versions": spec.versions, "routing": spec.routing})
    return target


def update_routing(
    repo: Path,
    model: str,
    routing: Mapping[str, str],
    *,
    versions: tuple[int, ...] | list[int] | None = None,
) -> RepositoryModel:
    """Rewrite only the routing (and optionally the loaded version list) of an existing config."""
    current = read_model_config(repo, model)
    new_versions = tuple(versions) if versions is not None else current.spec.versions
    missing = [v for v in {int(x) for x in routing.values()} if v not in new_versions]
    if missing:
        raise RepositoryError(
            f"model {model!r}: routing points at version(s) {sorted(missing)} that are not in the version policy"
        )
    spec = current.spec.with_routing(routing, tuple(new_versions))
    write_config(repo, spec, current.flavor)
    return RepositoryModel(spec=spec, flavor=current.flavor, path=current.path)


def _atomic_write_text(target: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_writable(repo: Path) -> None:
    """Create ``repo`` if needed; raise RepositoryError naming the path when it cannot be written."""
    repo = Path(repo)
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RepositoryError(f"model repository {repo} cannot be created: {e.strerror or e}") from e
    if not os.access(repo, os.W_OK | os.X_OK):
        raise RepositoryError(f"model repository {repo} is not writable")
    # os.access lies for root and on some mounts: prove it with a real file.
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=repo)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RepositoryError(f"model repository {repo} is not writable: {e.strerror or e}") from e


# ---- staging ---------------------------------------------------------------------------------


@contextlib.contextmanager
def staging(repo: Path, model: str, version: int | str) -> Iterator[Path]:
    """A fresh empty folder under ``<repo>/.staging`` (same filesystem); removed on exit if still there."""
    ensure_writable(repo)
    root = Path(repo) / STAGING_DIR
    root.mkdir(exist_ok=True)
    path = root / f"{model}-{int(version)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def install_staged(staged: Path, repo: Path, model: str, version: int | str) -> Path:
    """Move a complete staged version directory into ``<repo>/<model>/<version>``.

    A version already there is moved aside into staging first and deleted afterwards, so the
    target path always holds either the old or the new complete directory.
    """
    target = version_dir(repo, model, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (staged / contract.VERSION_METADATA_FILE).is_file():
        raise RepositoryError(f"staged version {staged} is incomplete (no {contract.VERSION_METADATA_FILE})")
    old: Path | None = None
    if target.exists():
        old = staged.parent / f"{staged.name}-old"
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def remove_version(repo: Path, model: str, version: int | str) -> bool:
    """Delete a version directory (moved into staging first, so it vanishes at once). True if it existed."""
    target = version_dir(repo, model, version)
    if not target.exists():
        return False
    root = Path(repo) / STAGING_DIR
    root.mkdir(exist_ok=True)
    trash = root / f"{model}-{int(version)}-removed-{uuid.uuid4().hex[:8]}"
    os.replace(target, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def cleanup_staging(repo: Path, *, older_than_s: float = 0.0) -> int:
    """Remove leftover staging folders (crashed exports) older than ``older_than_s``; return how many."""
    root = Path(repo) / STAGING_DIR
    if not root.is_dir():
        return 0
    now = time.time()
    removed = 0
    for p in root.iterdir():
        try:
            age = now - p.stat().st_mtime
        except FileNotFoundError:
            continue
        if age >= older_than_s:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed += 1
    return removed


# ---- version metadata ------------------------------------------------------------------------


def write_version_metadata(folder: Path, metadata: Mapping[str, Any]) -> Path:
    """Write ``treeserve.json`` into a (staging) version folder."""
    path = folder / contract.VERSION_METADATA_FILE
    _atomic_write_text(
        path, json.dumps(dict(metadata), indent=2, sort_keys=True, default=_json_default) + "\n"
    )
    return path


def write_reference(folder: Path, inputs: np.ndarray, outputs: Mapping[str, np.ndarray]) -> Path:
    """Write ``reference.npz``: ``inputs`` (float32) and one array per output tensor."""
    path = folder / contract.VERSION_REFERENCE_FILE
    arrays = {
        "inputs": np.asarray(inputs, dtype=np.float32),
        **{k: np.asarray(v) for k, v in outputs.items()},
    }
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


def read_version_metadata(repo: Path, model: str, version: int | str) -> dict[str, Any]:
    """``treeserve.json`` of an installed version."""
    path = version_dir(repo, model, version) / contract.VERSION_METADATA_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise ModelNotInRepositoryError(
            f"model {model!r} version {version} is not installed in {repo}"
        ) from e


def read_reference(repo: Path, model: str, version: int | str) -> dict[str, np.ndarray]:
    """``reference.npz`` of an installed version as {name: array}."""
    path = version_dir(repo, model, version) / contract.VERSION_REFERENCE_FILE
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError as e:
        raise ModelNotInRepositoryError(f"model {model!r} version {version} has no {path.name}") from e


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
