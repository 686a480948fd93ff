"""What runs in the prediction log's conversion process (see ``DurablePredictionLog``).

Nothing here imports ``gateway.metrics`` at module level: :func:`init` must run before
prometheus_client is loaded in the child. With several uvicorn workers the environment names a
shared metrics folder; a child loading prometheus_client there would write its own files beside
the workers', and its ``predlog_writable`` and ``ready`` gauges (aggregated by ``min``) would read
0 forever. The gateway counts the child's conversions itself.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def init() -> None:
    """Set the child up before its first conversion."""
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        os.environ.pop(name, None)
    # A SIGINT/SIGTERM sent to the gateway's process group is the gateway's to handle: it converts
    # what is left and then shuts this process down. Should the gateway die instead, this process
    # ends when its task pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def convert(path: Path, predlog_dir: Path) -> int:
    """Convert one retired segment to Parquet and remove it; rows converted (not counted here)."""
    from gateway import predlog_recover

    return predlog_recover.write_segment(path, predlog_dir)
