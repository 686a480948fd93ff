"""``treeserve demo``: the main job on embedded defaults, end to end."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``treeserve demo``."""
