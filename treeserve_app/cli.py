"""The ``treeserve`` command: thin typer front-ends, one per package, registered here.

Each module of ``treeserve_app.commands`` has ``register(app)`` and imports heavy libraries inside
the command functions, so ``treeserve --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from treeserve_app import clikit, commands, demo
from treeserve_app.clihelp import ReadableGroup

app = typer.Typer(
    name="treeserve",
    help="Triton-backed serving stack for XGBoost models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=ReadableGroup,
)


def _print_version(value: bool) -> None:
    if value:
        from treeserve import __version__

        typer.echo(f"treeserve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="Show INFO logs, library warnings and download bars (-vv: DEBUG).",
        ),
    ] = 0,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log one JSON object per line (TREESERVE_LOG_JSON).")
    ] = False,
) -> None:
    """Triton-backed serving stack for XGBoost models."""
    clikit.configure_output(verbose=verbose, log_json=log_json)


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
