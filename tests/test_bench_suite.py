"""The pytest-benchmark suite in ``benchmarks/`` still runs (so that it cannot rot).

The default ``python -m pytest`` collects ``tests/`` only: the suite times
10,000-entry loops for several rounds, which is a benchmark run, not a test.
Here it runs once per benchmark with ``--benchmark-disable`` on 50 entries,
in a subprocess that sees the same server variables as this session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_suite_runs() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(ROOT / "benchmarks"),
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--benchmark-disable",
            "--bench-ops",
            "50",
            "--bench-rounds",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and " failed" not in result.stdout
