"""treeserve drift."""
