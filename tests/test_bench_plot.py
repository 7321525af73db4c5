"""``ctx bench --plot``: a readable PNG from the benchmark's JSON document."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from context_framework.bench.plot import plot_results, si
from context_framework.exceptions import MissingDependencyError

PNG = b"\x89PNG\r\n\x1a\n"


def _result(
    store: str, mode: str, calls: float, baseline: str | None = None, role: str = "ours"
) -> dict[str, Any]:
    return {
        "store": store,
        "mode": mode,
        "calls_per_second": calls,
        "baseline_of": baseline,
        "baseline_mode": "per-call" if baseline else None,
        "role": role,
    }


DOC: dict[str, Any] = {
    "context_framework": "0.1.0",
    "machine": "x86_64",
    "cpus": 2,
    "python": "3.11",
    "repeat": 1,
    "ops": 10_000,
    "batch_ops": 100_000,
    "modes": ["per-call", "buffered", "batch"],
    "results": [
        _result("raw sqlite3", "per-call", 80_000, role="baseline"),
        _result("SQLiteContextStore", "per-call", 110_000, "raw sqlite3"),
        _result("SQLiteContextStore", "buffered", 150_000, "raw sqlite3"),
        _result("SQLiteContextStore", "batch", 400_000),
        _result("InMemoryContextStore", "per-call", 1_500_000),
    ],
    "sweep": [
        {"store": "SQLiteContextStore", "batch_size": b, "entries_per_second": r}
        for b, r in ((1, 50_000), (10, 200_000), (100, 400_000))
    ],
    "processes": [
        {
            "store": "SQLiteContextStore",
            "mode": m,
            "processes": 2,
            "ops_per_process": 100,
            "shared": True,
            "calls_per_second": r,
        }
        for m, r in (("per-call", 90_000), ("batch", 350_000))
    ],
    "annotations": [
        {
            "label": "InMemoryContextStore",
            "rows": 10_000_000,
            "what": "one dict over all rows",
            "seconds": 1.5,
            "peak_mib": 120.0,
        },
        {"label": "RedisContextStore", "rows": 1_000_000, "what": "per-row metadata", "unavailable": "no"},
    ],
    "sharding": {
        "servers": ["a", "b", "c"],
        "keys": 1000,
        "batch": 100,
        **{n: {"write": 1e5, "read": 2e5, "overall": 1.3e5} for n in ("single", "sharded", "sharded_serial")},
    },
}


def test_every_panel_draws(tmp_path: Path) -> None:
    path = tmp_path / "bench.png"
    assert plot_results(DOC, str(path)) == str(path)
    assert path.read_bytes()[:8] == PNG


def test_only_the_table(tmp_path: Path) -> None:
    path = tmp_path / "table.png"
    plot_results({"results": DOC["results"], "modes": ["per-call"]}, str(path))
    assert path.read_bytes()[:8] == PNG


def test_nothing_to_plot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_results({"results": []}, str(tmp_path / "empty.png"))


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"context-framework\[bench\]"):
        plot_results(DOC, str(tmp_path / "x.png"))


@pytest.mark.parametrize(
    ("value", "text"), [(1_234_567, "1.23M"), (45_600, "45.6k"), (999, "999"), (12.5, "12.5"), (3e9, "3G")]
)
def test_si(value: float, text: str) -> None:
    assert si(value) == text
