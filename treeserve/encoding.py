"""How a string feature reaches a tree model: a fixed, versioned vocabulary (one owner).

ONNX cannot express XGBoost's categorical splits, so a string feature is encoded *before* the
model: its value's position in a fixed vocabulary, as a float; a value outside the vocabulary, or
null, is missing (NaN) and meets the missing-value policy like any other gap.

    vocabulary ("home", "search", "cart")    "search" -> 1.0    "blog" -> NaN    None -> NaN

The vocabulary is declared once, on the Feast field (``feature_repo/``) as two tags::

    Field(name="last_page_viewed", dtype=String,
          tags={"treeserve.encoding": "vocabulary/v1", "treeserve.vocabulary": "home,search,cart"})

Training encodes the historical features with it and records it with the model version (MLflow
tag ``treeserve.encodings``, ``treeserve.json`` key ``encodings``); the online readers encode what
they read with the FeatureService's declaration, and the gateway refuses a version whose recorded
encoding differs from the FeatureService's (like a changed feature list). Exporter, gateway and
batch scoring therefore feed the model the same codes. Appending values keeps old codes; any other
change is a new contract (retrain).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from treeserve.errors import ConfigError

TAG_ENCODING = "treeserve.encoding"
"""Feast field tag: the encoding's kind and version, e.g. ``vocabulary/v1``."""
TAG_VOCABULARY = "treeserve.vocabulary"
"""Feast field tag: the vocabulary, comma-separated, in code order."""
VOCABULARY_V1 = "vocabulary/v1"
"""The one encoding kind this treeserve knows: position in a fixed vocabulary, unknown -> NaN."""


@dataclass(frozen=True)
class Vocabulary:
    """A fixed vocabulary: value -> its position (float); anything else -> NaN."""

    values: tuple[str, ...]
    kind: str = VOCABULARY_V1
    _codes: dict[str, float] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError("a vocabulary encoding needs at least one value")
        if len(set(self.values)) != len(self.values):
            raise ConfigError(f"vocabulary has duplicate values: {list(self.values)}")
        object.__setattr__(self, "_codes", {v: float(i) for i, v in enumerate(self.values)})

    def code(self, value: Any) -> float:
        """The code of one value (NaN for null or a value outside the vocabulary)."""
        if not isinstance(value, str):
            return math.nan
        return self._codes.get(value, math.nan)

    def encode(self, values: Iterable[Any]) -> np.ndarray:
        """Codes of many values, float64."""
        codes = self._codes
        return np.array(
            [codes.get(v, math.nan) if isinstance(v, str) else math.nan for v in values], dtype=np.float64
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded with a model version."""
        return {"kind": self.kind, "values": list(self.values)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Vocabulary:
        """From the JSON form (``ConfigError`` on an unknown kind)."""
        kind = str(raw.get("kind") or "")
        if kind != VOCABULARY_V1:
            raise ConfigError(f"unknown feature encoding {kind!r} (this treeserve knows {VOCABULARY_V1!r})")
        return cls(tuple(str(v) for v in raw.get("values") or ()), kind)


Encodings = Mapping[str, Vocabulary]
"""Feature name -> its encoding (features not listed are numeric)."""


def from_field_tags(feature: str, tags: Mapping[str, str]) -> Vocabulary | None:
    """The encoding a Feast field declares in its tags (None: a numeric feature)."""
    kind = tags.get(TAG_ENCODING)
    if kind is None:
        return None
    if kind != VOCABULARY_V1:
        raise ConfigError(
            f"feature {feature!r} declares encoding {kind!r}; this treeserve knows {VOCABULARY_V1!r}"
        )
    values = tuple(v.strip() for v in tags.get(TAG_VOCABULARY, "").split(",") if v.strip())
    if not values:
        raise ConfigError(f"feature {feature!r} declares {kind} without a {TAG_VOCABULARY!r} tag")
    return Vocabulary(values, kind)


def field_tags(values: Iterable[str]) -> dict[str, str]:
    """The Feast field tags declaring a ``vocabulary/v1`` encoding of ``values``."""
    return {TAG_ENCODING: VOCABULARY_V1, TAG_VOCABULARY: ",".join(values)}


def to_json(encodings: Encodings) -> str:
    """The recorded form (MLflow tag): ``{"feature": {"kind": ..., "values": [...]}}``."""
    return json.dumps({f: e.to_dict() for f, e in sorted(encodings.items())}, sort_keys=True)


def from_json(text: str | Mapping[str, Any] | None) -> dict[str, Vocabulary]:
    """Parse the recorded form (a JSON string or the decoded object; empty/None: no encodings)."""
    if not text:
        return {}
    raw = json.loads(text) if isinstance(text, str) else text
    if not isinstance(raw, Mapping):
        raise ConfigError("recorded feature encodings are not a JSON object")
    return {str(f): Vocabulary.from_dict(e) for f, e in raw.items()}


def mismatch(recorded: Encodings, declared: Encodings) -> str:
    """'' when a version's recorded encodings equal the FeatureService's, else what differs."""
    if dict(recorded) == dict(declared):
        return ""
    names = sorted(set(recorded) | set(declared))
    diffs = []
    for name in names:
        mine, theirs = recorded.get(name), declared.get(name)
        if mine != theirs:
            show = lambda e: "numeric" if e is None else f"{e.kind} {list(e.values)}"  # noqa: E731
            diffs.append(f"{name}: trained with {show(mine)}, FeatureService declares {show(theirs)}")
    return "; ".join(diffs)
