"""The string-feature encoding: a fixed, versioned vocabulary; unknown and null are missing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from treeserve import encoding
from treeserve.encoding import Vocabulary
from treeserve.errors import ConfigError
from treeserve.repository import VersionMetadata, contract_mismatch

PAGES = Vocabulary(("home", "search", "cart"))


def test_a_value_is_its_position_and_anything_else_is_missing() -> None:
    codes = PAGES.encode(["home", "cart", "blog", None, 3, ""])
    assert codes[:2].tolist() == [0.0, 2.0]
    assert np.isnan(codes[2:]).all()
    assert PAGES.code("search") == 1.0 and math.isnan(PAGES.code("Search"))


@given(st.lists(st.one_of(st.none(), st.text(max_size=12), st.sampled_from(PAGES.values))))
def test_codes_are_vocabulary_positions_or_nan(values: list[str | None]) -> None:
    codes = PAGES.encode(values)
    for v, c in zip(values, codes, strict=True):
        if v in PAGES.values:
            assert PAGES.values[int(c)] == v
        else:
            assert math.isnan(c)


def test_the_recorded_form_round_trips_and_names_its_version() -> None:
    text = encoding.to_json({"last_page_viewed": PAGES})
    assert '"kind": "vocabulary/v1"' in text
    assert encoding.from_json(text) == {"last_page_viewed": PAGES}
    assert encoding.from_json(None) == {} and encoding.from_json("") == {}


def test_an_unknown_encoding_kind_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown feature encoding 'vocabulary/v9'"):
        encoding.from_json('{"page": {"kind": "vocabulary/v9", "values": ["a"]}}')
    with pytest.raises(ConfigError, match="duplicate"):
        Vocabulary(("a", "a"))


def test_field_tags_declare_the_encoding() -> None:
    tags = encoding.field_tags(PAGES.values)
    assert encoding.from_field_tags("page", tags) == PAGES
    assert encoding.from_field_tags("n", {}) is None
    with pytest.raises(ConfigError, match=r"without a 'treeserve\.vocabulary' tag"):
        encoding.from_field_tags("page", {"treeserve.encoding": "vocabulary/v1"})


def test_a_changed_vocabulary_is_a_contract_difference() -> None:
    assert encoding.mismatch({"p": PAGES}, {"p": PAGES}) == ""
    reordered = Vocabulary(("search", "home", "cart"))
    assert "trained with vocabulary/v1 ['home', 'search', 'cart']" in encoding.mismatch(
        {"p": PAGES}, {"p": reordered}
    )
    assert "FeatureService declares numeric" in encoding.mismatch({"p": PAGES}, {})
    a = VersionMetadata(features=("p",), encodings={"p": PAGES})
    b = VersionMetadata(features=("p",), encodings={"p": reordered})
    assert contract_mismatch(a, b, version_label="v1", other_label="v2")


def test_version_metadata_records_the_encoding() -> None:
    meta = VersionMetadata(features=("p",), encodings={"p": PAGES})
    raw = meta.to_dict()
    assert raw["encodings"] == {"p": {"kind": "vocabulary/v1", "values": ["home", "search", "cart"]}}
    assert VersionMetadata.from_dict(raw).encodings == {"p": PAGES}
    assert VersionMetadata.from_dict({"features": ["x"]}).encodings == {}
