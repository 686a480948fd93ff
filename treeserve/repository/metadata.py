"""What a version directory records about itself: ``treeserve.json`` and ``reference.npz``.

``VersionMetadata`` is the typed form of ``treeserve.json`` (written last into a staged version,
so its presence marks the directory complete). ``reference.npz`` holds the canary's reference
inputs (float32 ``[n, n_features]``, NaN = missing) and the outputs the model gave for them.
``contract_mismatch`` is the one "same feature contract" rule: one Triton model serves one
ordered feature list, one task and one class count.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from treeserve import contract, encoding
from treeserve.encoding import Vocabulary
from treeserve.repository.errors import RepositoryError

REFERENCE_INPUTS = "inputs"
"""The array of ``reference.npz`` that holds the inputs; every other array is an output tensor."""

CONTRACT_KEYS: tuple[str, ...] = ("features", "task", "n_classes", "encodings")
"""What two versions must share to be served by one Triton model."""


@dataclass(frozen=True)
class VersionMetadata:
    """``treeserve.json`` of one installed version."""

    model: str = ""
    version: str = ""
    task: str = "binary"
    n_classes: int = 2
    features: tuple[str, ...] = ()
    """Ordered input features the version was trained on."""
    feature_service: str = ""
    entity_keys: tuple[str, ...] = ()
    medians: Mapping[str, float] = field(default_factory=dict)
    """Training medians per feature (features whose median is unknown are absent)."""
    base_rate: float = 0.0
    """Positive rate in training: the fallback score."""
    encodings: Mapping[str, Vocabulary] = field(default_factory=dict)
    """String feature -> the vocabulary that encodes it (``treeserve.encoding``); absent: numeric."""
    flavor: str = ""
    files: tuple[str, ...] = ()
    """Model files the flavour wrote into the version directory."""
    run_id: str = ""
    objective: str = ""
    best_iteration: int | None = None
    source_sha256: str = ""
    onnx_sha256: str = ""
    exported_at: str = ""
    parity: Mapping[str, Any] = field(default_factory=dict)
    """{"rows": int, "max_abs_diff": float, "reference": origin of the parity rows}."""
    attribution: Mapping[str, float] = field(default_factory=dict)
    """Mean |TreeSHAP contribution| per feature on the reference rows (classes summed): the
    attribution-drift reference. Empty when the version has no explainer."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this version of treeserve does not know (kept when the file is rewritten)."""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> VersionMetadata:
        """Typed metadata from the JSON object (missing keys take their defaults)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        medians = raw.get("medians") or {}
        n_classes = raw.get("n_classes")
        best = raw.get("best_iteration")
        return cls(
            model=str(raw.get("model") or ""),
            version=str(raw.get("version") or ""),
            task=str(raw.get("task") or "binary"),
            n_classes=int(n_classes) if n_classes else 2,
            features=tuple(str(f) for f in raw.get("features") or ()),
            feature_service=str(raw.get("feature_service") or ""),
            entity_keys=tuple(str(k) for k in raw.get("entity_keys") or ()),
            medians={str(k): float(v) for k, v in medians.items() if v is not None},
            base_rate=float(raw.get("base_rate") or 0.0),
            encodings=encoding.from_json(raw.get("encodings") or None),
            flavor=str(raw.get("flavor") or ""),
            files=tuple(str(f) for f in raw.get("files") or ()),
            run_id=str(raw.get("run_id") or ""),
            objective=str(raw.get("objective") or ""),
            best_iteration=int(best) if best is not None else None,
            source_sha256=str(raw.get("source_sha256") or ""),
            onnx_sha256=str(raw.get("onnx_sha256") or ""),
            exported_at=str(raw.get("exported_at") or ""),
            parity=dict(raw.get("parity") or {}),
            attribution={str(k): float(v) for k, v in (raw.get("attribution") or {}).items()},
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``treeserve.json``."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        for key in ("features", "entity_keys", "files"):
            out[key] = list(out[key])
        out["medians"] = dict(self.medians)
        out["encodings"] = {f: e.to_dict() for f, e in sorted(self.encodings.items())}
        out["parity"] = dict(self.parity)
        out["attribution"] = dict(self.attribution)
        return {**dict(self.extra), **out}


def contract_mismatch(
    version: VersionMetadata, other: VersionMetadata, *, version_label: str, other_label: str
) -> str | None:
    """Why two versions cannot share one Triton model (first differing contract key), or None."""
    for key in CONTRACT_KEYS:
        mine, theirs = getattr(version, key), getattr(other, key)
        if mine != theirs:
            show_mine = list(mine) if isinstance(mine, tuple) else mine
            show_theirs = list(theirs) if isinstance(theirs, tuple) else theirs
            return (
                f"{version_label} has {key}={show_mine!r} but {other_label} has {show_theirs!r}; "
                "one Triton model serves one contract"
            )
    return None


def write_version_metadata(folder: Path, metadata: VersionMetadata | Mapping[str, Any]) -> Path:
    """Write ``treeserve.json`` into a (staging) version folder atomically."""
    meta = metadata if isinstance(metadata, VersionMetadata) else VersionMetadata.from_dict(metadata)
    path = Path(folder) / contract.VERSION_METADATA_FILE
    atomic_write_text(
        path, json.dumps(meta.to_dict(), indent=2, sort_keys=True, default=_json_default) + "\n"
    )
    return path


def load_version_metadata(folder: Path) -> VersionMetadata:
    """``treeserve.json`` of the version directory ``folder`` (FileNotFoundError when absent)."""
    path = Path(folder) / contract.VERSION_METADATA_FILE
    text = path.read_text()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise RepositoryError(f"{path} is not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise RepositoryError(f"{path} does not hold a JSON object")
    try:
        return VersionMetadata.from_dict(raw)
    except (TypeError, ValueError, AttributeError) as e:
        raise RepositoryError(f"{path} is malformed: {e}") from e


def write_reference(folder: Path, inputs: np.ndarray, outputs: Mapping[str, np.ndarray]) -> Path:
    """Write ``reference.npz``: ``inputs`` (float32) and one array per output tensor."""
    path = Path(folder) / contract.VERSION_REFERENCE_FILE
    arrays = {
        REFERENCE_INPUTS: np.asarray(inputs, dtype=np.float32),
        **{k: np.asarray(v) for k, v in outputs.items()},
    }
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return path


@dataclass(frozen=True)
class ReferenceData:
    """``reference.npz``: canary inputs and the outputs the version must give for them."""

    inputs: np.ndarray
    """float32 [n, n_features]; NaN = missing."""
    outputs: Mapping[str, np.ndarray]
    """Output tensor name -> expected array."""


def load_reference(folder: Path) -> ReferenceData:
    """``reference.npz`` of the version directory ``folder`` (FileNotFoundError when absent)."""
    path = Path(folder) / contract.VERSION_REFERENCE_FILE
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if REFERENCE_INPUTS not in arrays:
        raise RepositoryError(f"{path} has no {REFERENCE_INPUTS!r} array")
    inputs = np.asarray(arrays.pop(REFERENCE_INPUTS), dtype=np.float32)
    return ReferenceData(inputs=inputs, outputs=arrays)


def atomic_write_text(target: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``target``, fsync it and rename it into place."""
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


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
