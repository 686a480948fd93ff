"""treeserve loadtest."""
