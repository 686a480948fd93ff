"""What runs in the prediction log's conversion process (see ``DurablePredictionLog``).

Nothing here imports ``gateway.metrics`` at module level: :func:`init` must run before
prometheus_client is loaded in the child. With several uvicorn workers the environment names a
shared metrics folder; a child loading prometheus_client there would write its own files beside
the workers', and its ``predlog_writable`` and ``ready`` gauges (aggregated by ``min``) would read
0 until the folder is removed. The gateway counts the child's conversions itself.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from pathlib import Path


def init() -> None:
    """Set the child up before its first conversion."""
    folders = {
        os.environ.pop(name, "") for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
    }
    # Spawning ran the gateway's main script again; should it have loaded the metrics, the files
    # they made for this process go (what it writes to them from now on is lost, as it should be).
    for folder in folders - {""}:
        for path in Path(folder).glob(f"*_{os.getpid()}.db"):
            path.unlink(missing_ok=True)
    # A SIGINT/SIGTERM sent to the gateway's process group is the gateway's to handle: it converts
    # what is left and then shuts this process down. Should the gateway die instead (kill -9, OOM),
    # this process goes too, mid-conversion or not (as a conversion thread would have): nothing
    # else would end it, and the gateway's next start converts the segment again.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent.sentinel,), name="predlog-parent", daemon=True
        ).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(0)


def convert(path: Path, predlog_dir: Path) -> int:
    """Convert one retired segment to Parquet and remove it; rows converted (not counted here)."""
    from gateway import predlog_recover

    return predlog_recover.write_segment(path, predlog_dir)
