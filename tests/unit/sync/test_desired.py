"""Desired state: alias targets plus the last N champions of the registry's history."""

from __future__ import annotations

from exporter.sync.desired import compute_desired
from treeserve.registry import HISTORY_LIMIT, previous_champions, with_champion


def test_champion_and_challenger_and_retained_in_order() -> None:
    d = compute_desired("m", {"champion": "3", "challenger": "4"}, ["1", "2", "3"], keep_champions=2)
    assert d.champion == "3"
    assert d.retained == ("2", "1")
    assert d.versions == ("3", "4", "2", "1")


def test_rollback_keeps_the_version_rolled_back_from() -> None:
    # champions served: 1, then 2; the alias moves back to 1.
    d = compute_desired("m", {"champion": "1"}, ["1", "2"], keep_champions=2)
    assert d.versions == ("1", "2")


def test_keep_zero_champions_and_unknown_aliases_ignored() -> None:
    d = compute_desired("m", {"champion": "5", "staging": "9"}, ["4", "5"], keep_champions=0)
    assert d.versions == ("5",)
    assert "staging" not in d.aliases


def test_no_aliases_keeps_history_only() -> None:
    d = compute_desired("m", {}, ["1", "2"], keep_champions=1)
    assert d.champion is None
    assert d.versions == ("2",)


def test_history_appends_changes_only_and_is_bounded() -> None:
    h = with_champion([], "1")
    h = with_champion(h, "1")
    h = with_champion(h, "2")
    h = with_champion(h, None)
    assert h == ["1", "2"]
    assert len(with_champion([str(i) for i in range(100)], "x")) == HISTORY_LIMIT


def test_previous_champions_distinct_newest_first() -> None:
    assert previous_champions(["1", "2", "1", "3", "2"], "2") == ["3", "1"]
