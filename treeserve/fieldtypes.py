"""Constrained field types shared by every settings group."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port a service listens on or connects to."""

PortOrOff = Annotated[int, Field(ge=0, le=65535)]
"""A TCP port, or 0 to switch the listener off."""
