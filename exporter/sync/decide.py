"""Pure decisions of a pass: which version each alias routes to, and how to explain the state."""

from __future__ import annotations

from collections.abc import Mapping

from exporter.sync.desired import SERVED_ALIASES
from exporter.sync.status import ModelStatus, VersionFailure
from treeserve import contract


def choose_routing(
    desired: Mapping[str, str],
    old: Mapping[str, str],
    ready: set[str],
    failures: Mapping[str, VersionFailure],
) -> dict[str, str]:
    """Alias -> version to serve: the desired one when it is ready and healthy, else the old one."""
    routing: dict[str, str] = {}
    for alias in SERVED_ALIASES:
        want = desired.get(alias)
        had = old.get(alias)
        if want is not None and want in ready and want not in failures:
            routing[alias] = want
        elif (
            had is not None
            and had in ready
            and had not in failures
            and (want is not None or alias == contract.ALIAS_CHAMPION)
        ):
            # A failed or missing replacement never takes the serving version down; a deleted
            # champion alias keeps serving what it served (a deleted challenger stops).
            routing[alias] = had
    return routing


def explain(st: ModelStatus, desired: Mapping[str, str]) -> tuple[bool, str]:
    """(in sync?, one line saying why not) from a model's status after a pass."""
    reasons: list[str] = []
    for alias, v in desired.items():
        served = st.routing.get(alias)
        if served == v and v in st.served_versions and v not in st.failures:
            continue
        if served == v:
            why = st.failures.get(v)
            cause = f"{why.reason}: {why.message}" if why else "not ready in Triton"
            reasons.append(f"{alias} -> {v} is routed but not served ({cause}); its files are kept")
            continue
        why = st.failures.get(v)
        cause = f"{why.reason}: {why.message}" if why else "not installed/ready yet"
        keep = f"; still serving {served}" if served else "; nothing served for this alias"
        reasons.append(f"{alias} -> {v} is not served ({cause}){keep}")
    missing = [v for v in st.desired_versions if v not in st.served_versions and v not in st.failures]
    if missing:
        reasons.append(f"retained versions not loaded: {', '.join(missing)}")
    in_sync = not reasons and set(desired.items()) <= set(st.routing.items())
    return in_sync, "; ".join(reasons) if reasons else "in sync"
