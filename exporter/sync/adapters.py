"""The exporter API as the sync uses it: install a version, build a model spec, clean staging.

A thin seam over ``exporter.install`` / ``treeserve.repository`` so the reconcile pass reads as
the algorithm it is, and so the one place that knows those modules' signatures is small.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from exporter.flavors import get_flavor
from exporter.settings import SyncConfig
from treeserve import repository as repo_mod
from treeserve.procs import pid_alive
from treeserve.repository import TritonModelSpec
from treeserve.repository import contract_mismatch as _contract_mismatch

log = logging.getLogger(__name__)

STALE_STAGING_S = 3600.0
"""Staging folders whose owner cannot be identified are removed after this long."""


def install(settings: SyncConfig, client: Any, model: str, version: str, repo: Path) -> None:
    """Export -> validate -> atomically move ``model`` ``version`` into ``repo`` (no config, no Triton)."""
    from exporter.install import install_version

    install_version(settings, client, model, int(version), repository=repo, flavor=settings.exporter.flavor)


def prepare_install() -> None:
    """Import the exporter's conversion stack (xgboost, onnx, onnxmltools) before installing."""
    import exporter.install  # noqa: F401


def installed(repo: Path, model: str) -> set[str]:
    """Complete version directories of ``model`` as strings."""
    return {str(v) for v in repo_mod.installed_versions(repo, model)}


def read_current(repo: Path, model: str) -> repo_mod.RepositoryModel | None:
    """The model's current config, or None when it has none yet."""
    try:
        return repo_mod.read_model_config(repo, model)
    except repo_mod.ModelNotInRepositoryError:
        return None


def config_override(repo: Path, model: str, versions: set[str]) -> str:
    """The model's config as a JSON load override that loads only ``versions``."""
    return repo_mod.config_override(repo, model, versions)


def build_spec(
    settings: SyncConfig, repo: Path, model: str, *, versions: list[str], routing: dict[str, str]
) -> TritonModelSpec:
    """The config for installed ``versions`` and ``routing`` (model facts from their metadata)."""
    from exporter.install import spec_for_versions

    return spec_for_versions(
        settings, repo, model, versions=[int(v) for v in versions], routing=dict(routing)
    )


def contract_mismatch(
    repo: Path, model: str, version: str, reference: str, *, serving: bool = True
) -> str | None:
    """Why ``version`` cannot share a Triton model with ``reference`` (the serving version, or
    the version that will be served first when ``serving`` is False), or None."""
    if version == reference:
        return None
    return _contract_mismatch(
        repo_mod.read_version_metadata(repo, model, version),
        repo_mod.read_version_metadata(repo, model, reference),
        version_label=f"version {version}",
        other_label=f"the serving version {reference}" if serving else f"version {reference}",
    )


def write_config(settings: SyncConfig, repo: Path, spec: TritonModelSpec) -> None:
    """Write ``config.pbtxt`` atomically in the configured flavour."""
    repo_mod.write_config(repo, spec, get_flavor(settings.exporter.flavor))


def remove_version(repo: Path, model: str, version: str) -> None:
    """Delete an installed version directory."""
    repo_mod.remove_version(repo, model, version)


def cleanup_staging(repo: Path) -> int:
    """Remove staging folders left by dead exports; return how many.

    Staging names carry the owner's pid (``<model>-<version>-<pid>-<id>``): a folder whose owner
    is gone is a crash leftover. Folders without a readable pid go after ``STALE_STAGING_S``.
    """
    root = repo / repo_mod.STAGING_DIR
    if not root.is_dir():
        return 0
    removed = 0
    now = time.time()
    for p in root.iterdir():
        pid = _owner_pid(p.name)
        try:
            age_s = now - p.stat().st_mtime
        except FileNotFoundError:
            continue
        dead = (
            "-removed-" in p.name
            or (pid is not None and pid != os.getpid() and not pid_alive(pid))
            or (pid is None and age_s > STALE_STAGING_S)
        )
        if dead:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed += 1
            log.info("decision=cleanup-staging path=%s", p.name)
    return removed


def _owner_pid(name: str) -> int | None:
    parts = name.split("-")
    # <model may contain dashes>-<version>-<pid>-<hex8>[-old]
    if parts and parts[-1] == "old":
        parts = parts[:-1]
    if len(parts) >= 4 and parts[-2].isdigit() and parts[-3].isdigit():
        return int(parts[-2])
    return None
