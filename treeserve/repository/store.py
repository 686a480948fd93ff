"""The Triton model repository on disk: read and write configs, stage, install and remove versions.

Every write is a rename: a version is built in ``.staging`` and moved into place with
``os.replace``; ``config.pbtxt`` is written to a temporary file next to it and replaced. A
version directory is complete when it holds ``treeserve.json`` (written last in staging).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from treeserve import contract
from treeserve.errors import ConfigError
from treeserve.repository.config import (
    FlavorConfig,
    TritonModelSpec,
    parse_message,
    render_config,
    render_message,
    routing_from_model_config,
    routing_generation_from_model_config,
    spec_from_model_config,
    with_routing_message,
)
from treeserve.repository.errors import ModelNotInRepositoryError, RepositoryError
from treeserve.repository.explainer import build_explainer_config, explainer_name, is_explainer_name
from treeserve.repository.metadata import (
    ReferenceData,
    VersionMetadata,
    atomic_write_text,
    load_reference,
    load_version_metadata,
)

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
    def routing_generation(self) -> int:
        """How many times the routing changed; 0 for a config written before the counter existed."""
        return self.spec.routing_generation

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

    @property
    def input_name(self) -> str:
        """The input tensor's name as the config declares it."""
        return self.spec.input_name

    def version_for(self, alias: str) -> str | None:
        """The version string an alias routes to, or None."""
        return self.spec.routing.get(alias)


def model_dir(repo: Path, model: str) -> Path:
    """``<repo>/<model>``."""
    return Path(repo) / model


def version_dir(repo: Path, model: str, version: int | str) -> Path:
    """``<repo>/<model>/<version>``."""
    return Path(repo) / model / str(int(version))


def _read_config_message(repo: Path, model: str) -> tuple[mc.ModelConfig, Path]:
    path = model_dir(repo, model) / CONFIG_FILE
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise ModelNotInRepositoryError(
            f"model {model!r} is not in the repository {repo} (no {path.name})"
        ) from e
    except OSError as e:
        raise RepositoryError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return parse_message(text), path
    except ConfigError as e:
        raise RepositoryError(f"{path}: {e}") from e


def read_model_config(repo: Path, model: str) -> RepositoryModel:
    """Parse ``<repo>/<model>/config.pbtxt`` (routing, features, versions, entity keys, service).

    ModelNotInRepositoryError when there is none; RepositoryError naming the file when it is
    unreadable or malformed.
    """
    cfg, path = _read_config_message(repo, model)
    try:
        spec, flavor = spec_from_model_config(cfg)
    except RepositoryError:
        raise
    except ConfigError as e:
        raise RepositoryError(f"{path}: {e}") from e
    return RepositoryModel(spec=spec, flavor=flavor, path=path.parent)


def config_override(repo: Path, model: str, versions: Iterable[int | str]) -> str:
    """``model``'s config.pbtxt as the JSON config of a Triton load request that loads only
    ``versions`` (the routed ones first after a restart; the file's own load adds the rest)."""
    from google.protobuf import json_format

    cfg, _ = _read_config_message(repo, model)
    cfg.version_policy.specific.versions[:] = sorted(int(v) for v in versions)
    return json_format.MessageToJson(cfg, preserving_proto_field_name=True, indent=None)


def read_routing(repo: Path, model: str) -> dict[str, str]:
    """Alias -> version from the model's config; empty when the model has no config yet.

    Only the routing parameter has to be well-formed (RepositoryError naming the file otherwise).
    """
    try:
        cfg, path = _read_config_message(repo, model)
    except ModelNotInRepositoryError:
        return {}
    try:
        return routing_from_model_config(cfg)
    except ConfigError as e:
        raise RepositoryError(f"{path}: {e}") from e


def list_models(repo: Path) -> list[str]:
    """Models that have a ``config.pbtxt`` in ``repo``."""
    repo = Path(repo)
    if not repo.is_dir():
        return []
    return sorted(
        p.name
        for p in repo.iterdir()
        if (p / CONFIG_FILE).is_file() and not p.name.startswith(".") and not is_explainer_name(p.name)
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


def write_config(repo: Path, spec: TritonModelSpec, flavor: FlavorConfig) -> Path:
    """Render ``spec`` in ``flavor`` and write ``<repo>/<model>/config.pbtxt`` atomically.

    The explainer companion's config follows: the same versions, those that have an explainer.
    The routing generation is the file's business, not the caller's: it is the replaced config's,
    plus one when the routing changes (``spec.routing_generation`` is ignored).
    """
    spec = replace(spec, routing_generation=_next_generation(repo, spec.name, spec.routing))
    path = _write_config_text(repo, spec, render_config(spec, flavor))
    write_explainer_config(repo, spec)
    return path


def _next_generation(repo: Path, model: str, routing: Mapping[str, str]) -> int:
    """The routing generation a config with ``routing`` gets when it replaces the current one."""
    try:
        cfg, _ = _read_config_message(repo, model)
        before, generation = routing_from_model_config(cfg), routing_generation_from_model_config(cfg)
    except (RepositoryError, ModelNotInRepositoryError, ConfigError):  # none yet, or unreadable
        before, generation = {}, 0
    changed = {str(k): str(v) for k, v in routing.items()} != before
    return generation + 1 if changed else generation


def explainer_versions(repo: Path, model: str) -> list[int]:
    """Versions of ``model`` whose explainer companion is installed, ascending."""
    return installed_versions(repo, explainer_name(model))


def write_explainer_config(repo: Path, spec: TritonModelSpec) -> Path | None:
    """Write (or remove, when no listed version has one) ``<repo>/<model>__explain/config.pbtxt``."""
    have = set(explainer_versions(repo, spec.name))
    versions = tuple(v for v in spec.versions if v in have)
    target = model_dir(repo, explainer_name(spec.name)) / CONFIG_FILE
    if not versions:
        target.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            target.parent.rmdir()  # only when empty
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, render_message(build_explainer_config(spec, versions)))
    return target


def _write_config_text(repo: Path, spec: TritonModelSpec, text: str) -> Path:
    target = model_dir(repo, spec.name) / CONFIG_FILE
    ensure_writable(repo)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, text)
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
    cfg, _ = _read_config_message(repo, model)
    current, flavor = spec_from_model_config(cfg)
    new_versions = tuple(versions) if versions is not None else current.versions
    missing = [v for v in {int(x) for x in routing.values()} if v not in new_versions]
    if missing:
        raise RepositoryError(
            f"model {model!r}: routing points at version(s) {sorted(missing)} that are not in the version policy"
        )
    updated = with_routing_message(
        cfg, routing, tuple(new_versions), generation=_next_generation(repo, model, routing)
    )
    spec, _ = spec_from_model_config(updated)
    path = _write_config_text(repo, spec, render_message(updated))
    write_explainer_config(repo, spec)
    return RepositoryModel(spec=spec, flavor=flavor, path=path.parent)


def read_version_metadata(repo: Path, model: str, version: int | str) -> VersionMetadata:
    """``treeserve.json`` of an installed version (ModelNotInRepositoryError when not installed)."""
    try:
        return load_version_metadata(version_dir(repo, model, version))
    except FileNotFoundError as e:
        raise ModelNotInRepositoryError(
            f"model {model!r} version {version} is not installed in {repo}"
        ) from e


def read_reference(repo: Path, model: str, version: int | str) -> ReferenceData:
    """``reference.npz`` of an installed version (ModelNotInRepositoryError when absent)."""
    folder = version_dir(repo, model, version)
    try:
        return load_reference(folder)
    except FileNotFoundError as e:
        raise ModelNotInRepositoryError(
            f"model {model!r} version {version} has no {contract.VERSION_REFERENCE_FILE}"
        ) from e


def fingerprint(repo: Path, model: str) -> tuple[float, ...]:
    """Cheap change detector: mtimes of ``config.pbtxt`` and the version metadata files."""
    root = model_dir(repo, model)
    stamps: list[float] = []
    try:
        stamps.append((root / CONFIG_FILE).stat().st_mtime_ns)
        for meta in sorted(root.glob(f"*/{contract.VERSION_METADATA_FILE}")):
            stamps.append(meta.stat().st_mtime_ns)
    except FileNotFoundError:
        return ()
    return tuple(stamps)


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
    """Delete a version directory and its explainer's (moved into staging first, so they vanish at once).

    True if the version existed.
    """
    if not is_explainer_name(model):
        remove_version(repo, explainer_name(model), version)
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
