"""What the registry wants served: the alias targets plus the last N champions.

The pure part (``compute_desired``, ``update_history``) is separated from the MLflow read
(``read_aliases``) so it can be tested without a registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from treeserve import contract
from treeserve.errors import NotFoundError, ServiceUnavailableError

SERVED_ALIASES = (contract.ALIAS_CHAMPION, contract.ALIAS_CHALLENGER)
"""Aliases the sync serves, in priority order."""

HISTORY_LIMIT = 20
"""How many past champions the status file remembers."""


@dataclass(frozen=True)
class DesiredState:
    """Desired Triton state of one registered model."""

    model: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Served alias -> registry version (only aliases that are set)."""
    retained: tuple[str, ...] = ()
    """Previous champions kept loaded for instant rollback, newest first."""

    @property
    def champion(self) -> str | None:
        """The version behind ``champion``, if set."""
        return self.aliases.get(contract.ALIAS_CHAMPION)

    @property
    def versions(self) -> tuple[str, ...]:
        """Every desired version, alias targets first, without duplicates."""
        out: list[str] = []
        for v in [*(self.aliases[a] for a in SERVED_ALIASES if a in self.aliases), *self.retained]:
            if v not in out:
                out.append(v)
        return tuple(out)


def update_history(history: Sequence[str], champion: str | None) -> list[str]:
    """Append ``champion`` to the champion history (oldest first) when it changed."""
    out = [str(v) for v in history]
    if champion is not None and (not out or out[-1] != champion):
        out.append(champion)
    return out[-HISTORY_LIMIT:]


def previous_champions(history: Sequence[str], champion: str | None) -> list[str]:
    """Distinct earlier champions, newest first, excluding the current one."""
    out: list[str] = []
    for v in reversed(history):
        if v != champion and v not in out:
            out.append(v)
    return out


def compute_desired(
    model: str, aliases: Mapping[str, str], history: Sequence[str], *, keep_champions: int
) -> DesiredState:
    """Desired state from the served aliases and the champion history (oldest first)."""
    served = {a: str(aliases[a]) for a in SERVED_ALIASES if aliases.get(a)}
    champion = served.get(contract.ALIAS_CHAMPION)
    retained = tuple(previous_champions(history, champion)[: max(keep_champions, 0)])
    return DesiredState(model=model, aliases=served, retained=retained)


def read_aliases(client: object, model: str) -> dict[str, str]:
    """Alias -> version (strings) of ``model`` from the registry."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model)  # type: ignore[attr-defined]
    except MlflowException as e:
        if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise NotFoundError(f"registered model {model!r} does not exist") from e
        raise ServiceUnavailableError(f"MLflow registry: {e.message}") from e
    except OSError as e:  # connection refused and friends, raised through requests
        raise ServiceUnavailableError(f"MLflow registry unreachable: {e}") from e
    return {str(k): str(v) for k, v in (registered.aliases or {}).items()}
