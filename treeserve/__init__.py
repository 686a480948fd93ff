"""treeserve: a Triton-backed serving stack for XGBoost models."""

__version__ = "0.1.0"
