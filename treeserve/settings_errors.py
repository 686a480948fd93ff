"""Turn pydantic/pydantic-settings failures into one line naming the variable and what it accepts.

``TREESERVE_TRITON__HTTP_PORT=-5`` becomes ``invalid setting triton.http_port
(TREESERVE_TRITON__HTTP_PORT='-5'): Input should be greater than or equal to 1; accepted: int from 1
to 65535``.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Sequence
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError


def env_name(loc: Sequence[str | int], *, prefix: str) -> str:
    """The environment variable behind a settings path: ("triton", "http_port") -> TREESERVE_TRITON__HTTP_PORT."""
    return prefix + "__".join(str(part).upper() for part in loc)


def _field(model: type[BaseModel], loc: Sequence[str | int]) -> FieldInfo | None:
    """The FieldInfo at ``loc`` in a nested settings tree (None when the path leaves the tree)."""
    info: FieldInfo | None = None
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = info.annotation
    return info


def accepted_values(info: FieldInfo) -> str:
    """What a field accepts, in words: the Literal choices, a numeric range, or its type."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(str(a) for a in typing.get_args(annotation))
    lo = hi = None
    for m in info.metadata:
        if isinstance(m, Ge | Gt):
            lo = f"{m.ge if isinstance(m, Ge) else m.gt}" + ("" if isinstance(m, Ge) else " (exclusive)")
        if isinstance(m, Le | Lt):
            hi = f"{m.le if isinstance(m, Le) else m.lt}" + ("" if isinstance(m, Le) else " (exclusive)")
    kind = getattr(annotation, "__name__", None) or " | ".join(getattr(a, "__name__", str(a)) for a in args)
    if typing.get_origin(annotation) in (list, tuple, set, dict):
        example = info.get_default(call_default_factory=True)
        kind = "object" if typing.get_origin(annotation) is dict else "list"
        return f"a JSON {kind}, e.g. {json.dumps(example or ([] if kind == 'list' else {}))}"
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    if lo is not None:
        return f"{kind} >= {lo}"
    if hi is not None:
        return f"{kind} <= {hi}"
    return str(kind)


def describe_validation_error(model: type[BaseModel], error: ValidationError, *, prefix: str) -> str:
    """One line for the first failing field: dotted path, variable and value, message, accepted values."""
    first = error.errors()[0]
    loc = tuple(first.get("loc", ()))
    where = ".".join(str(x) for x in loc) or "?"
    var = env_name(loc, prefix=prefix)
    shown = f" ({var}={os.environ[var]!r})" if var in os.environ else ""
    info = _field(model, loc)
    literal = info is not None and typing.get_origin(info.annotation) is typing.Literal
    accepted = f"; accepted: {accepted_values(info)}" if info is not None and not literal else ""
    return f"invalid setting {where}{shown}: {first.get('msg')}{accepted}"


def describe_settings_error(model: type[BaseModel], error: SettingsError, *, prefix: str) -> str:
    """One line for a value pydantic-settings could not parse (a list or object that is not JSON)."""
    for var, value in sorted(os.environ.items()):
        if not var.upper().startswith(prefix):
            continue
        loc = tuple(var[len(prefix) :].lower().split("__"))
        info = _field(model, loc)
        if info is None or typing.get_origin(info.annotation) not in (list, tuple, set, dict):
            continue
        try:
            json.loads(value)
        except ValueError:
            return (
                f"invalid setting {'.'.join(loc)} ({var}={value!r}): not valid JSON; "
                f"accepted: {accepted_values(info)}"
            )
    return f"invalid settings: {error}"
