"""The ``treeserve`` command: thin typer front-ends, one per package, registered here.

Each module of ``treeserve_app.commands`` has ``register(app)`` and imports heavy libraries inside
the command functions, so ``treeserve --help`` stays fast.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

import typer

from treeserve_app import clikit, commands, demo
from treeserve_app.clihelp import ReadableGroup

if TYPE_CHECKING:
    from typer._click.core import Context

OUTPUT_FLAG = re.compile(r"^(-v+|--verbose|--log-json)$")
"""The root's output options, which are also accepted after the subcommand (``treeserve train -v``)."""


def hoist_output_flags(args: list[str]) -> list[str]:
    """``args`` with the output flags moved in front of the subcommand, where the root parses them.

    Arguments after ``--`` are left alone. No subcommand has an option of these names, so moving
    them changes no command's meaning.
    """
    end = args.index("--") if "--" in args else len(args)
    head, tail = args[:end], args[end:]
    return [a for a in head if OUTPUT_FLAG.match(a)] + [a for a in head if not OUTPUT_FLAG.match(a)] + tail


class RootGroup(ReadableGroup):
    """The ``treeserve`` group: readable help, output flags before or after the subcommand."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_output_flags(args))  # type: ignore[arg-type]


app = typer.Typer(
    name="treeserve",
    help="Triton-backed serving stack for XGBoost models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=RootGroup,
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
            help="Show INFO logs, library warnings and download bars (-vv: DEBUG); also after the command.",
        ),
    ] = 0,
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json", help="Log one JSON object per line (TREESERVE_LOG_JSON); also after the command."
        ),
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
