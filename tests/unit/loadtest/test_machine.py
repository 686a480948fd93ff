"""The process-tree figures the benchmarks report for servers that work in child processes."""

from __future__ import annotations

import os
import subprocess
import sys

from loadtest.machine import process_tree_sum


def test_counts_the_children_of_a_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alone = process_tree_sum(child.pid, lambda p: 1.0)
        with_parent = process_tree_sum(os.getpid(), lambda p: 1.0)
    finally:
        child.kill()
        child.wait()
    assert alone == 1.0
    assert with_parent >= 2.0  # this process and the sleeping child


def test_gone_or_missing_process_reads_as_zero() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_tree_sum(child.pid, lambda p: 1.0) == 0.0
    assert process_tree_sum(None, lambda p: 1.0) == 0.0
