"""Promotion-driven sync: the registry aliases decide what Triton serves.

Level-triggered reconcile (``reconcile.reconcile_once``) made to run often and safely; an MLflow
webhook receiver (``webhook``) wakes it up at once, a poll interval covers lost deliveries
(``service``). ``treeserve sync`` is the command line (``cli``).
"""

from __future__ import annotations
