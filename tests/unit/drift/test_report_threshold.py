"""The Evidently report states treeserve's drift-share threshold, not Evidently's 0.5 default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from drift.evaluate import DriftConfig, evaluate
from drift.settings import DriftSettings


def test_report_html_names_the_share_threshold_in_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600), "score": rng.random(600)})
    cur = pd.DataFrame({"a": rng.normal(size=600) + 2, "b": rng.normal(size=600), "score": rng.random(600)})
    cfg = DriftConfig.from_settings(DriftSettings())
    assert cfg.share_threshold == DriftSettings().share_threshold == 0.3
    html = tmp_path / "report.html"
    evaluate(ref, cur, ["a", "b"], cfg).snapshot.save_html(str(html))
    text = html.read_text()
    assert "Dataset drift detection threshold is 0.3" in text
    assert "drift detection threshold is 0.5" not in text
