"""The canary: Triton's answer for a version's stored reference inputs must equal the stored outputs.

One rule for ``treeserve export --load`` and the sync: integer outputs must be equal; float
outputs must be finite and within ``atol + rtol * max(1, max |expected|)``. A NaN or infinite
output never matches, whatever the reference holds (a version that answers NaN is broken).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from exporter.errors import CanaryError
from treeserve.repository import ReferenceData

log = logging.getLogger(__name__)

Infer = Callable[[np.ndarray, list[str]], Mapping[str, np.ndarray]]
"""Send float32 rows, ask for these outputs, get {output name: array}."""


@dataclass(frozen=True)
class CanaryResult:
    """A canary inference's outcome."""

    model: str
    version: int
    rows: int
    max_abs_diff: float


def compare_outputs(
    got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], *, atol: float, rtol: float
) -> tuple[str | None, float]:
    """(None, worst |diff|) when every expected output matches, else (the worst miss in one line, diff)."""
    worst = 0.0
    for name, want_raw in expected.items():
        want = np.asarray(want_raw)
        have_raw = got.get(name)
        if have_raw is None:
            return f"output {name!r} missing", worst
        have = np.asarray(have_raw)
        if have.size != want.size:
            return f"output {name!r}: {have.size} values, expected {want.size}", worst
        have = have.reshape(want.shape)
        if want.dtype.kind in "iub":
            bad = int(np.sum(have != want))
            if bad:
                return f"output {name!r}: {bad} of {want.size} values differ", worst
            continue
        have64 = have.astype(np.float64)
        want64 = want.astype(np.float64)
        if not np.all(np.isfinite(want64)):
            return f"output {name!r}: the stored reference holds NaN or infinite values", worst
        bad = int(np.sum(~np.isfinite(have64)))
        if bad:
            return f"output {name!r}: {bad} of {want.size} values are NaN or infinite", worst
        if not want.size:
            continue
        scale = max(1.0, float(np.max(np.abs(want64))))
        diff = float(np.max(np.abs(have64 - want64)))
        worst = max(worst, diff)
        if not diff <= atol + rtol * scale:
            return f"output {name!r}: max |diff| {diff:.3g} > tolerance {atol + rtol * scale:.3g}", worst
    return None, worst


def run_canary(
    infer: Infer,
    reference: ReferenceData,
    *,
    model: str,
    version: int | str,
    outputs: Sequence[str] | None = None,
    batch_rows: int = 256,
    atol: float,
    rtol: float,
) -> CanaryResult:
    """Send the reference inputs through ``infer`` in batches; CanaryError naming the worst miss."""
    expected = {k: v for k, v in reference.outputs.items() if outputs is None or k in outputs}
    inputs = reference.inputs
    step = max(1, batch_rows)
    parts = [infer(inputs[i : i + step], list(expected)) for i in range(0, len(inputs), step)]
    got = {k: np.concatenate([np.asarray(p[k]) for p in parts]) if parts else np.empty(0) for k in expected}
    miss, worst = compare_outputs(got, expected, atol=atol, rtol=rtol)
    if miss:
        raise CanaryError(f"model {model!r} version {version}: canary failed: {miss}")
    log.info("decision=canary-ok model=%s version=%s rows=%d", model, version, len(inputs))
    return CanaryResult(model=model, version=int(version), rows=len(inputs), max_abs_diff=worst)
