"""The treeserve application: the composition root that wires the packages together.

    treeserve/        the ground: shared settings, contract, errors, registry, logs (imports no package)
    training/ exporter/ gateway/ drift/ loadtest/    the packages (import the ground only*)
    treeserve_app/    the root settings tree, the ``treeserve`` CLI, the demo, the retraining pipeline

Arrows run one way: ground <- packages <- treeserve_app (``tests/unit/test_layering.py``).
"""
