"""PNG charts of throughput and p99 against concurrency (matplotlib, Agg backend, no display).

A section's ``curves`` map a series name (``gateway``, ``baseline``, ``triton``) to points
``{"concurrency": c, "rps": r, "p99_ms": p}``; ``rps``/``p99_ms`` may be
``{"median", "min", "max"}`` dicts, drawn as a line through the medians with min–max error bars.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _split(v: Any) -> tuple[float, float, float] | None:
    if v is None:
        return None
    if isinstance(v, Mapping):
        if v.get("median") is None:
            return None
        m = float(v["median"])
        return m, float(v.get("min", m)), float(v.get("max", m))
    m = float(v)
    return m, m, m


def _series(
    points: Sequence[Mapping[str, Any]], field: str
) -> tuple[list[float], list[float], list[list[float]]]:
    xs: list[float] = []
    ys: list[float] = []
    err: list[list[float]] = [[], []]
    for p in sorted(points, key=lambda p: float(p.get("concurrency") or 0)):
        s = _split(p.get(field))
        if s is None or p.get("concurrency") is None:
            continue
        m, lo, hi = s
        xs.append(float(p["concurrency"]))
        ys.append(m)
        err[0].append(max(0.0, m - lo))
        err[1].append(max(0.0, hi - m))
    return xs, ys, err


def render_curves(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, *, title: str
) -> Path | None:
    """Two panels (requests/s and p99 ms against concurrency), one line per series; None if empty."""
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    ticks: set[float] = set()
    for name, points in curves.items():
        for ax, field in ((ax_rps, "rps"), (ax_p99, "p99_ms")):
            xs, ys, err = _series(points, field)
            if xs:
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
                ticks.update(xs)
    ax_rps.set(title="throughput", xlabel="concurrency (clients)", ylabel="requests/s")
    ax_p99.set(title="p99 latency", xlabel="concurrency (clients)", ylabel="p99 (ms)")
    ax_p99.set_yscale("log")
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax_p99.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax_p99.yaxis.set_major_formatter(plain)
    ax_p99.yaxis.set_minor_formatter(NullFormatter())
    for ax in (ax_rps, ax_p99):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("chart written: %s", path)
    return path


def render_section_charts(sections: Mapping[str, Mapping[str, Any]], out_dir: Path) -> dict[str, list[Path]]:
    """One PNG per section that has curves: ``<out_dir>/<section>.png``."""
    written: dict[str, list[Path]] = {}
    for name, section in sections.items():
        curves = section.get("curves")
        if not isinstance(curves, Mapping) or not curves:
            continue
        try:
            path = render_curves(curves, out_dir / f"{name}.png", title=str(section.get("title") or name))
        except (ValueError, TypeError) as e:  # malformed points: report, never abort the suite
            log.warning("chart for %s skipped: %s", name, e)
            continue
        if path is not None:
            written[name] = [path]
    return written
