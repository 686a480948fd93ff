"""The model contract: names every part of treeserve agrees on.

No feature list lives here: the ordered feature list comes from the Feast FeatureService
(training) and is recorded with every model version (MLflow tags, ONNX metadata, Triton
config parameters). This module only names the places it is recorded under.
"""

from __future__ import annotations

# Triton tensors (docs/architecture.md, "Contracts").
INPUT_TENSOR = "features"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"
OUTPUT_PREDICTION = "prediction"

# Registry aliases.
ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"

# MLflow version/run tags.
TAG_FEATURES = "treeserve.features"
"""JSON list: the ordered feature list the model was trained on."""
TAG_FEATURE_SERVICE = "treeserve.feature_service"
TAG_ENTITY_KEYS = "treeserve.entity_keys"
"""JSON list: the entity join keys of the FeatureService (e.g. ["customer_id"])."""
TAG_ENCODINGS = "treeserve.encodings"
"""JSON object: string feature -> its encoding (``treeserve.encoding``), e.g.
{"last_page_viewed": {"kind": "vocabulary/v1", "values": ["home", ...]}}; absent: all numeric."""
TAG_TASK = "treeserve.task"
"""binary | multiclass | regression"""
TAG_CHAMPION_HISTORY = "treeserve.champion_history"
"""Registered-model tag, JSON list of version strings that held `champion`, oldest first, current
last (written by the promotion gate; `treeserve rollback` pops it)."""

# MLflow run artifacts written by training.
ARTIFACT_REFERENCE_SAMPLE = "reference/reference_sample.parquet"
"""A sample of training features (+ label, + score) for drift and parity."""
ARTIFACT_FEATURE_STATS = "reference/feature_stats.json"
"""{"medians": {feature: float}, "base_rate": float, "n_rows": int, ...}"""
ARTIFACT_HOLDOUT = "reference/holdout.parquet"
"""Held-out rows (features + label) used by the promotion gate."""

# Triton config.pbtxt parameters (model level).
PARAM_FEATURES = "treeserve.features"
PARAM_ROUTING = "treeserve.routing"
"""JSON object alias -> version string, e.g. {"champion": "3", "challenger": "4"}."""
PARAM_ROUTING_GENERATION = "treeserve.routing_generation"
"""Decimal counter of routing changes: a config write that changes the routing sets it one higher
than the config it replaces. Absent (read as 0) in configs written before the counter existed."""
PARAM_FEATURE_SERVICE = "treeserve.feature_service"
PARAM_ENTITY_KEYS = "treeserve.entity_keys"

# Files inside a Triton version directory.
VERSION_METADATA_FILE = "treeserve.json"
VERSION_REFERENCE_FILE = "reference.npz"
"""np.savez with arrays `inputs` (float32 [n, n_features]) and one array per output tensor."""

# Explanations (TreeSHAP contributions, computed in Triton by a companion model per version).
OUTPUT_CONTRIBUTIONS = "contributions"
"""float32 [n_groups, n_features + 1] per row: TreeSHAP contributions in margin space, bias last."""
EXPLAINER_SUFFIX = "__explain"
"""The companion model explaining ``<model>`` is ``<model>__explain`` (same version numbers)."""
