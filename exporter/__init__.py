"""treeserve exporter."""
