"""The ``treeserve`` command: thin typer front-ends, one per package, registered here.

Each package exposes ``register(app)`` in its ``cli`` module and imports heavy libraries inside
the command functions, so ``treeserve --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="treeserve",
    help="Triton-backed serving stack for XGBoost models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Triton-backed serving stack for XGBoost models."""


_PACKAGES = (
    "training",
    "exporter",
    "exporter.sync",
    "gateway",
    "loadtest",
    "drift",
    "treeserve.pipeline_cli",
    "treeserve.demo",
)

for _name in _PACKAGES:
    _module = importlib.import_module(_name if _name.startswith("treeserve.") else f"{_name}.cli")
    _module.register(app)


@app.command("version")
def version() -> None:
    """Print the treeserve version."""
    from treeserve import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``treeserve`` console script."""
    app()


if __name__ == "__main__":
    main()
