"""The ``treeserve`` command: thin typer front-ends, one per package, registered here.

Each module of ``treeserve_app.commands`` has ``register(app)`` and imports heavy libraries inside
the command functions, so ``treeserve --help`` stays fast.
"""

from __future__ import annotations

import typer

from treeserve_app import commands, demo

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


for _module in (
    commands.training,
    commands.export,
    commands.sync,
    commands.gateway,
    commands.loadtest,
    commands.drift,
    commands.pipeline,
    demo,
):
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
