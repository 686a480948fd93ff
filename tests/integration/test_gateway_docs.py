"""The gateway's ``/docs`` page renders in a headless browser that cannot reach the internet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPORTS = Path(__file__).resolve().parents[2] / "reports"


def _chromium(url: str, *extra: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with every host except 127.0.0.1 unresolvable (no network)."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docs_page_shows_the_api_offline(gateway_stack: Any, demo_world: Any, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (apt-get install -y chromium); it renders /docs offline")
    gateway = gateway_stack.start_gateway(demo_world, name="docs")
    try:
        url = f"http://127.0.0.1:{gateway.port}/docs"
        proc = _chromium(url, "--dump-dom", tmp=tmp_path)
        dom = proc.stdout
        # Rendered by swagger-ui-bundle.js from the spec: only possible when the local assets loaded.
        assert 'class="swagger-ui"' in dom, proc.stderr[-2000:]
        assert "treeserve gateway" in dom
        assert "/v1/models/{model}/predict" in dom
        REPORTS.mkdir(exist_ok=True)
        shot = _chromium(
            url, f"--screenshot={REPORTS / 'gateway-docs.png'}", "--window-size=1280,1400", tmp=tmp_path
        )
        assert shot.returncode == 0, shot.stderr[-2000:]
        assert (REPORTS / "gateway-docs.png").stat().st_size > 10_000
    finally:
        gateway.stop()
