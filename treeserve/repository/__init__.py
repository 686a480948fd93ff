"""The on-disk Triton model repository: the one owner of its format.

Layout::

    <repo>/<model>/config.pbtxt          TritonModelSpec rendered for a flavour (config.py)
    <repo>/<model>/<version>/treeserve.json   VersionMetadata, written last (metadata.py)
    <repo>/<model>/<version>/reference.npz    canary inputs + expected outputs (metadata.py)
    <repo>/<model>/<version>/model.*          the flavour's model files (written by the exporter)
    <repo>/<model>__explain/             the version's explainer companion (explainer.py)
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
from treeserve.repository.explainer import (
    EXPLAINER_FILE,
    build_explainer_config,
    explainer_file,
    explainer_name,
    is_explainer_name,
    output_groups,
)
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
    config_override,
    ensure_writable,
    explainer_versions,
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
    write_explainer_config,
)

__all__ = [
    "CONFIG_FILE",
    "CONTRACT_KEYS",
    "EXPLAINER_FILE",
    "STAGING_DIR",
    "FlavorConfig",
    "ModelNotInRepositoryError",
    "ReferenceData",
    "RepositoryError",
    "RepositoryModel",
    "Task",
    "TritonModelSpec",
    "VersionMetadata",
    "build_explainer_config",
    "build_model_config",
    "cleanup_staging",
    "config_override",
    "contract_mismatch",
    "ensure_writable",
    "explainer_file",
    "explainer_name",
    "explainer_versions",
    "fingerprint",
    "install_staged",
    "installed_versions",
    "is_explainer_name",
    "list_models",
    "load_reference",
    "load_version_metadata",
    "model_dir",
    "output_groups",
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
    "write_explainer_config",
    "write_reference",
    "write_version_metadata",
]
