"""``/docs`` and ``/redoc`` reference only the gateway's own static files, and those are served."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.anyio

_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


def _assets(html: str) -> list[str]:
    return [a or b for a, b in _ASSET.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_api_pages_load_only_local_assets(make_gateway: Callable[..., Any], page: str) -> None:
    async with make_gateway() as h:
        r = await h.client.get(page)
        assert r.status_code == 200
        assert "treeserve gateway" in r.text
        assets = _assets(r.text)
        assert assets, r.text
        remote = [a for a in assets if re.match(r"^(https?:)?//", a)]
        assert not remote, f"{page} loads from the network: {remote}"
        for asset in assets:
            got = await h.client.get(asset)
            assert got.status_code == 200, asset
            assert len(got.content) > 0
        if page == "/docs":
            js = await h.client.get("/static/docs/swagger-ui/swagger-ui-bundle.js")
            assert js.headers["content-type"].startswith(("application/javascript", "text/javascript"))
            assert "/openapi.json" in assets
