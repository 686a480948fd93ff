"""What the registry wants served: the alias targets plus the last N champions.

The champion history is the registry's (``treeserve.registry``): the same list ``treeserve
rollback`` reads, so the versions kept loaded are the ones a rollback moves to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from treeserve import contract
from treeserve.registry import previous_champions

SERVED_ALIASES = (contract.ALIAS_CHAMPION, contract.ALIAS_CHALLENGER)
"""Aliases the sync serves, in priority order."""


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


def compute_desired(
    model: str, aliases: Mapping[str, str], history: Sequence[str], *, keep_champions: int
) -> DesiredState:
    """Desired state from the served aliases and the registry's champion history (oldest first)."""
    served = {a: str(aliases[a]) for a in SERVED_ALIASES if aliases.get(a)}
    champion = served.get(contract.ALIAS_CHAMPION)
    retained = tuple(previous_champions(history, champion)[: max(keep_champions, 0)])
    return DesiredState(model=model, aliases=served, retained=retained)
