"""The generated reference pages match the code: a new option or setting without `make docs` fails."""

from __future__ import annotations

from treeserve_app import docgen


def test_generated_reference_pages_are_current() -> None:
    stale = docgen.stale_pages()
    assert stale == [], f"stale: {stale}; run `make docs` (python -m treeserve_app.docgen)"


def test_settings_reference_names_every_variable() -> None:
    text = (docgen.REFERENCE / "settings.md").read_text()
    for var in ("TREESERVE_HOME", "TREESERVE_TRITON__HTTP_PORT", "TREESERVE_GATEWAY__TRITON__GRPC_URL"):
        assert f"`{var}`" in text
    assert "from 1 to 65535" not in text  # the page shows bounds as ≥/≤, not the error wording
    assert "≥ 1, ≤ 65535" in text
