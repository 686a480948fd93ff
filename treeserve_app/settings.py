"""The root settings tree: the shared core plus one group per package.

Built once at an entry point (``load_settings``) and passed down; each package function takes
the root settings through its package's ``Protocol`` (what it reads), never this class.
"""

from __future__ import annotations

from typing import Any

from drift.settings import DriftSettings
from exporter.settings import ExporterSettings, SyncSettings, TritonServerSettings
from gateway.settings import GatewaySettings
from loadtest.settings import LoadtestSettings
from training.settings import TrainingSettings
from treeserve.settings import (
    ENV_PREFIX,
    CoreSettings,
    DataSettings,
    FeastSettings,
    MlflowSettings,
    build_settings,
)

__all__ = ["ENV_PREFIX", "DataSettings", "FeastSettings", "MlflowSettings", "Settings", "load_settings"]


class Settings(CoreSettings):
    """The root of every treeserve setting."""

    training: TrainingSettings = TrainingSettings()
    exporter: ExporterSettings = ExporterSettings()
    triton: TritonServerSettings = TritonServerSettings()
    sync: SyncSettings = SyncSettings()
    gateway: GatewaySettings = GatewaySettings()
    drift: DriftSettings = DriftSettings()
    loadtest: LoadtestSettings = LoadtestSettings()


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment; malformed values become one ConfigError."""
    return build_settings(Settings, **overrides)
