"""``--help`` written for people: ``promote [OPTIONS] MODEL VERSION``, ``--since TEXT``, bare flags.

Typer labels every parameter with its Python type (``<bool>`` beside each flag, ``<str>`` beside
each argument) and wraps required arguments in braces on the usage line. ``ReadableGroup`` is the
root group's class: when typer has built the whole command tree it gives each parameter a
label in click's own style — arguments by their upper-case name, options by a type word
(TEXT, INTEGER, FLOAT, PATH, ``[a|b]`` for choices), flags by nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:
    from typer._click.core import Context  # typer's own copy of click: the type its methods take

_TYPE_WORDS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", Path: "PATH"}


class _Argument(TyperArgument):
    """An argument shown by its upper-case name, ``[NAME]`` when optional."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Context) -> str | None:
        return None


class _Option(TyperOption):
    """An option followed by a type word; a flag followed by nothing."""

    def display_type_rich(self, ctx: Context) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        desc = self.type_descriptor
        if desc.is_choice:
            return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
        if desc.is_path:
            return "PATH"
        annotation = desc.annotation
        if desc.is_list:
            annotation = (getattr(annotation, "__args__", None) or (str,))[0]
        word = _TYPE_WORDS.get(annotation, getattr(annotation, "__name__", "VALUE").upper())
        return f"{word}..." if desc.is_list else word


def _readable(command: TyperCommand | TyperGroup) -> None:
    # --help is made on first use and kept: make it now so it is relabelled with the rest.
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if type(param) is TyperArgument:
            param.__class__ = _Argument
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
        elif type(param) is TyperOption:
            param.__class__ = _Option
    for sub in getattr(command, "commands", {}).values():
        _readable(sub)


class ReadableGroup(TyperGroup):
    """The root group: relabels the parameters of every command below it (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _readable(self)
