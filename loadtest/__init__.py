"""treeserve loadtest: Locust users, the headless runner with SLOs, the benchmark suite.

Python API (no Locust import here; runs happen in a child process)::

    from loadtest.runner import run_loadtest
    result = run_loadtest(settings, target="gateway", users=16, duration="10s", slo_p99_ms=50)
    print(format_summary(result.summary))   # loadtest.report.format_summary
"""

from __future__ import annotations

from pathlib import Path


def locustfile_path() -> Path:
    """The locustfile shipped with this package."""
    return Path(__file__).with_name("locustfile.py")
