"""The status file: what was desired, what is served, and why they differ.

Written atomically (temp file + ``os.replace``) after every pass; read by ``treeserve sync
status``, by the next pass (champion history, remembered failures) and by the gateway.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass
class VersionFailure:
    """Why a desired version is not served."""

    reason: str
    """Short machine-friendly category: validation, canary, export, triton, registry."""
    message: str
    at: float
    """Unix time of the failure."""


@dataclass
class ModelStatus:
    """Desired vs served for one registered model."""

    desired_aliases: dict[str, str] = field(default_factory=dict)
    retained: list[str] = field(default_factory=list)
    desired_versions: list[str] = field(default_factory=list)
    routing: dict[str, str] = field(default_factory=dict)
    """Alias -> version written into config.pbtxt (what the gateway serves)."""
    served_versions: list[str] = field(default_factory=list)
    """Versions ready in Triton after the pass."""
    installed_versions: list[str] = field(default_factory=list)
    prestaged: list[str] = field(default_factory=list)
    """Versions newer than the champion, loaded and canaried ahead of their promotion (not routed)."""
    failures: dict[str, VersionFailure] = field(default_factory=dict)
    alias_seen_at: dict[str, float] = field(default_factory=dict)
    """"alias=version" -> unix time the alias move was first known (webhook or poll)."""
    in_sync: bool = False
    message: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelStatus:
        """Parse one model entry, tolerating missing fields."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["failures"] = {k: VersionFailure(**f) for k, f in (data.get("failures") or {}).items()}
        return cls(**known)


@dataclass
class SyncStatus:
    """The whole status file."""

    updated_at: float = 0.0
    trigger: str = ""
    result: str = "never"
    """ok | degraded (some desired version not served) | failed (pass aborted)."""
    error: str = ""
    duration_s: float = 0.0
    models: dict[str, ModelStatus] = field(default_factory=dict)
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Triton server -> {"up", "error", "ready": {model: [versions]}} as the pass found it."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"schema": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncStatus:
        """Parse the file contents."""
        models = {k: ModelStatus.from_json(v) for k, v in (data.get("models") or {}).items()}
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "models"}
        return cls(models=models, **fields)


def read_status(path: Path) -> SyncStatus:
    """The last written status, or an empty one when there is none or it is unreadable."""
    try:
        return SyncStatus.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return SyncStatus()
    except (OSError, ValueError, TypeError) as e:
        log.warning("sync status file unreadable, starting fresh path=%s error=%s", path, e)
        return SyncStatus()


def write_status(path: Path, status: SyncStatus) -> None:
    """Write the status atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(status.to_json(), f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
