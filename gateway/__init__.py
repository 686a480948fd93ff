"""treeserve gateway."""
