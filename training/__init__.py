"""treeserve training."""
