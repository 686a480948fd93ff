"""The on-disk Triton model repository: the one owner of its format.

Layout::

    <repo>/<model>/config.pbtxt          TritonModelSpec rendered for a flavour (config.py)
    <repo>/<model>/<version>/treeserve.json   VersionMetadata, written last (metadata.py)
    <repo>/<model>/<version>/reference.npz    canary inputs + expected outputs (metadata.py)
    <repo>/<model>/<version>/model.*          the flavour's model files (written by the exporter)
    <repo>/.staging/                     work area on the same filesystem (Triton never reads it)

``store.py`` reads and writes these atomically. This package imports nothing of the exporter,
the gateway, drift, training or loadtest: they all read the repository through it.
"""

from __future__ import annotations

from treeserve.repository.config import (
    FlavorConfig,
    Task,
    TritonModelSpec,
    build_model_config,
    parse_config,
    render_config,
    spec_from_model_config,
)
from treeserve.repository.errors import ModelNotInRepositoryError, RepositoryError
from treeserve.repository.metadata import (
    CONTRACT_KEYS,
    ReferenceData,
    VersionMetadata,
    contract_mismatch,
    load_reference,
    load_version_metadata,
    write_reference,
    write_version_metadata,
)
from treeserve.repository.store import (
    CONFIG_FILE,
    STAGING_DIR,
    RepositoryModel,
    cleanup_staging,
    ensure_writable,
    fingerprint,
    install_staged,
    installed_versions,
    list_models,
    model_dir,
    read_model_config,
    read_reference,
    read_routing,
    read_version_metadata,
    remove_version,
    staging,
    update_routing,
    version_dir,
    write_config,
)

__all__ = [
    "CONFIG_FILE",
    "CONTRACT_KEYS",
    "STAGING_DIR",
    "FlavorConfig",
    "ModelNotInRepositoryError",
    "ReferenceData",
    "RepositoryError",
    "RepositoryModel",
    "Task",
    "TritonModelSpec",
    "VersionMetadata",
    "build_model_config",
    "cleanup_staging",
    "contract_mismatch",
    "ensure_writable",
    "fingerprint",
    "install_staged",
    "installed_versions",
    "list_models",
    "load_reference",
    "load_version_metadata",
    "model_dir",
    "parse_config",
    "read_model_config",
    "read_reference",
    "read_routing",
    "read_version_metadata",
    "remove_version",
    "render_config",
    "spec_from_model_config",
    "staging",
    "update_routing",
    "version_dir",
    "write_config",
    "write_reference",
    "write_version_metadata",
]
