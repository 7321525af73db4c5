"""The ``ctx`` command line and the spec's benchmark script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from context_framework.bench.spec_benchmark import DictBaselineAdapter, format_table, run_benchmarks
from context_framework.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_spec_script_runs_unchanged() -> None:
    """Section 3 of the spec, verbatim, prints its two times."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "spec_benchmark.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "Benchmarking InMemoryContextStore..." in out
    assert re.search(r"Add time: \d+\.\d{4}s, Get time: \d+\.\d{4}s", out)


def test_bench_json(tmp_path: Path) -> None:
    target = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--ops",
            "300",
            "--batch-ops",
            "500",
            "--rows",
            "1000",
            "--repeat",
            "1",
            "--stores",
            "memory,sqlite",
            "--json",
            "--output",
            str(target),
        ]
    )
    assert code == 0
    doc = json.loads(target.read_text())
    rows = {(r["store"], r["mode"]): r for r in doc["results"]}
    assert set(rows) == {
        ("dict baseline", "per-call"),
        ("dict, membership only (weaker)", "per-call"),
        ("InMemoryContextStore", "per-call"),
        ("InMemoryContextStore", "buffered"),
        ("dict baseline", "batch"),
        ("InMemoryContextStore", "batch"),
        ("raw sqlite3", "per-call"),
        ("SQLiteContextStore", "per-call"),
        ("hand-written buffer (sqlite3)", "buffered"),
        ("SQLiteContextStore", "buffered"),
        ("raw sqlite3", "batch"),
        ("SQLiteContextStore", "batch"),
    }
    ours = rows[("InMemoryContextStore", "per-call")]
    assert ours["num_ops"] == 300 and ours["baseline_of"] == "dict baseline"
    assert ours["ratio"] > 0 and ours["calls_per_second"] == pytest.approx(2 * ours["ops_per_second"])
    assert rows[("SQLiteContextStore", "batch")]["num_ops"] == 500
    assert rows[("InMemoryContextStore", "batch")]["baseline_of"] == "dict baseline"
    assert [r["store"] for r in doc["results"]][:6] == [
        "dict baseline",
        "dict, membership only (weaker)",
        "InMemoryContextStore",
        "InMemoryContextStore",
        "dict baseline",
        "InMemoryContextStore",
    ]
    buffered = rows[("SQLiteContextStore", "buffered")]
    assert (buffered["baseline_of"], buffered["baseline_mode"]) == (
        "hand-written buffer (sqlite3)",
        "buffered",
    )
    assert buffered["num_ops"] == 300 and buffered["ratio"] > 0 and buffered["backend"] == "sqlite"
    assert buffered["raw_per_call_of"] == "raw sqlite3" and buffered["raw_per_call_ratio"] > 0
    assert rows[("raw sqlite3", "batch")]["role"] == "baseline"
    assert doc["modes"] == ["per-call", "buffered", "batch"] and doc["unavailable"] == {}
    assert "processes" not in doc and "sweep" not in doc


def test_bench_table_has_the_spec_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["bench", "--ops", "100", "--batch-ops", "100", "--repeat", "1", "--stores", "memory", "--quiet"]
        )
        == 0
    )
    out = capsys.readouterr().out
    for column in ("Store", "Num Ops (Add+Get)", "Time (Seconds)", "Ops/Second"):
        assert column in out
    assert "InMemoryContextStore" in out and "SQLiteContextStore" not in out


def test_bench_server_rows(tmp_path: Path, redis_url: str, postgres_url: str) -> None:
    """Redis and PostgreSQL rows, each next to its raw client, from the fixtures' servers."""
    target = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--ops",
            "50",
            "--batch-ops",
            "200",
            "--rows",
            "200",
            "--repeat",
            "1",
            "--stores",
            "redis,postgres",
            "--redis-url",
            redis_url,
            "--postgres-url",
            postgres_url,
            "--json",
            "--output",
            str(target),
        ]
    )
    assert code == 0
    doc = json.loads(target.read_text())
    assert doc["notes"] == []
    rows = {(r["store"], r["mode"]): r for r in doc["results"]}
    for mode in ("per-call", "batch"):
        assert rows[("RedisContextStore", mode)]["baseline_of"] == "raw redis-py"
        assert rows[("DBContextStore (PostgreSQL)", mode)]["baseline_of"] == "raw psycopg (jsonb)"
        assert rows[("raw redis-py", mode)]["ops_per_second"] > 0
    assert rows[("RedisContextStore", "buffered")]["baseline_of"] == "hand-written buffer (redis-py)"
    assert rows[("DBContextStore (PostgreSQL)", "buffered")]["baseline_of"] == "hand-written buffer (psycopg)"
    assert rows[("hand-written buffer (psycopg)", "buffered")]["role"] == "baseline"
    assert "hand-written buffer (redis-py)" in doc["footnote"]


def test_bench_leaves_out_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "bench",
                "--ops",
                "20",
                "--batch-ops",
                "20",
                "--rows",
                "20",
                "--repeat",
                "1",
                "--stores",
                "memory,redis",
                "--redis-url",
                "redis://127.0.0.1:1/0",
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "InMemoryContextStore" in out and "Note: redis: left out" in out


def test_bench_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--stores", "memory,cassandra"]) == 2
    assert "cassandra" in capsys.readouterr().err
    assert main(["bench", "--ops", "0"]) == 2


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "context_framework", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("context-framework ")


@pytest.mark.parametrize(
    "index",
    [None, [10, 20, 30], [0.5, 1.0, 2.0], ["a", "b", "c"]],
    ids=["range", "int", "float", "str"],
)
def test_dict_baseline_has_the_same_key_validation_as_the_adapter(index: list[Any] | None) -> None:
    """The benchmark's baseline refuses exactly the keys PandasContextAdapter refuses."""
    import numpy as np
    import pandas as pd

    from context_framework import ContextKeyError
    from context_framework.adapters.pandas_adapter import PandasContextAdapter

    df = pd.DataFrame({"A": [1, 2, 3], "B": [4, 5, 6]}, index=index)
    labels = list(df.index)
    candidates: list[Any] = [
        ("dataset",),
        ("dataset", 1),
        ("column", "A"),
        ("column", "C"),
        ("column",),
        ("colum", "A"),
        "row",
        ("row",),
        ("row", labels[0], "x"),
        ("row", labels[0], "column", "B"),
        ("row", labels[0], "column", "Z"),
        ("row", True),
        ("row", 1),
        ("row", 1.0),
        ("row", "a"),
        ("row", 10),
        ("row", 99),
        ("row", 0.5),
        ("row", 2.0),
        ("row", np.int64(1)),
        *[("row", lbl) for lbl in labels],
    ]
    ours = PandasContextAdapter(df)
    baseline = DictBaselineAdapter(df)
    for key in candidates:
        try:
            ours.add_context(key, {"x": 1})
            ours_ok = True
        except ContextKeyError:
            ours_ok = False
        try:
            baseline.add_context(key, {"x": 1})
            base_ok = True
        except KeyError:
            base_ok = False
        assert ours_ok == base_ok, key


def test_results_table_format() -> None:
    results = run_benchmarks(num_ops=50, batch_ops=50, rows=100, repeat=1, stores=("memory",))
    table = format_table(results)
    assert table.count("\n") == len(results) + 1
    assert "x dict baseline" in table


def _bench_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    target = tmp_path / "bench.json"
    tiny = ["--ops", "200", "--batch-ops", "300", "--rows", "400", "--repeat", "1"]
    assert main(["bench", *tiny, *args, "--output", str(target)]) == 0
    return json.loads(target.read_text())  # type: ignore[no-any-return]


def test_bench_modes_flag(tmp_path: Path) -> None:
    doc = _bench_json(tmp_path, "--stores", "sqlite", "--modes", "batch,per-call")
    assert {(r["store"], r["mode"]) for r in doc["results"]} == {
        ("raw sqlite3", "per-call"),
        ("SQLiteContextStore", "per-call"),
        ("raw sqlite3", "batch"),
        ("SQLiteContextStore", "batch"),
    }
    assert doc["modes"] == ["batch", "per-call"]


def test_bench_text_has_the_mode_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["bench", "--ops", "100", "--batch-ops", "100", "--repeat", "1", "--stores", "memory", "-q"])
        == 0
    )
    out = capsys.readouterr().out
    assert "per-call calls/s (vs. baseline)" in out and "buffered calls/s (vs. baseline)" in out
    assert "includes the final flush()" in out


def test_bench_footnote_says_what_each_baseline_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under the table and in the JSON document: one line per baseline row."""
    tiny = ["--ops", "50", "--batch-ops", "50", "--rows", "50", "--repeat", "1", "--stores", "memory,sqlite"]
    assert main(["bench", *tiny, "-q"]) == 0
    out = capsys.readouterr().out
    doc = _bench_json(tmp_path, "--stores", "memory,sqlite")
    baselines = [r for r in doc["results"] if r["role"] != "ours"]
    assert {r["store"] for r in baselines} == {
        "dict baseline",
        "dict, membership only (weaker)",
        "raw sqlite3",
        "hand-written buffer (sqlite3)",
    }
    assert doc["footnote"] in out
    for row in baselines:
        assert row["note"] and f"* {row['store']}: {row['note']}" in doc["footnote"]
    assert "WITHOUT ROWID" in doc["footnote"] and "no ratio" in doc["footnote"]


def test_ratios_below_one_are_printed_plainly() -> None:
    from context_framework.bench.spec_benchmark import CaseResult, format_summary, ratios_below_one

    base = CaseResult("raw sqlite3", "per-call", 100, 0.7, 0.7, role="baseline")
    ours = CaseResult("SQLiteContextStore", "per-call", 100, 1.0, 1.0, baseline_of="raw sqlite3", ratio=0.7)
    fast = CaseResult("InMemoryContextStore", "per-call", 100, 0.1, 0.1, baseline_of="dict", ratio=1.02)
    results = [base, ours, fast]
    assert "| 100 (0.70x)" in format_summary(results, ("per-call",))
    assert ratios_below_one(results) == ["SQLiteContextStore per-call: 0.70x raw sqlite3"]


def test_bench_quick(tmp_path: Path) -> None:
    """--quick: fewer ops, one run, the embedded stores; explicit flags still win."""
    from context_framework.cli import _options, build_parser

    options = _options(build_parser().parse_args(["bench", "--quick"]))
    assert (options.ops, options.batch_ops, options.repeat) == (5_000, 50_000, 2)
    assert options.stores == ("memory", "sqlite")
    explicit = _options(build_parser().parse_args(["bench", "--quick", "--repeat", "3", "--stores", "redis"]))
    assert (explicit.repeat, explicit.stores) == (3, ("redis",))
    target = tmp_path / "quick.json"
    assert (
        main(["bench", "--quick", "--ops", "50", "--batch-ops", "50", "--rows", "50", "-o", str(target)]) == 0
    )
    doc = json.loads(target.read_text())
    assert doc["quick"] is True and doc["repeat"] == 2
    assert {r["backend"] for r in doc["results"]} == {"memory", "sqlite"}


def test_bench_json_on_stdout_is_only_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "bench",
        "--ops",
        "50",
        "--batch-ops",
        "50",
        "--rows",
        "50",
        "--repeat",
        "1",
        "--stores",
        "memory",
    ]
    assert main([*args, "--modes", "per-call", "--sweep", "1,10", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["sweep"] and captured.err == ""


def test_bench_processes_on_sqlite(tmp_path: Path) -> None:
    doc = _bench_json(tmp_path, "--stores", "sqlite", "--modes", "per-call", "--processes", "2", "--no-table")
    assert doc["results"] == []
    (run,) = doc["processes"]
    assert (run["store"], run["mode"], run["processes"], run["shared"]) == (
        "SQLiteContextStore",
        "per-call",
        2,
        True,
    )
    assert run["ops_per_process"] == 200 and len(run["per_process"]) == 2
    assert run["calls_per_second"] > 0 and 0 < run["add_us"]["p50"] <= run["add_us"]["p99"]


def test_bench_sweep_flag(tmp_path: Path) -> None:
    doc = _bench_json(tmp_path, "--stores", "memory,sqlite", "--sweep", "10,1", "--no-table")
    assert [(r["backend"], r["batch_size"]) for r in doc["sweep"]] == [
        ("memory", 1),
        ("memory", 10),
        ("sqlite", 1),
        ("sqlite", 10),
    ]
    assert all(r["entries"] >= 200 and r["entries_per_second"] > 0 for r in doc["sweep"])


def test_bench_plot_is_a_png(tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    doc = _bench_json(tmp_path, "--stores", "memory", "--sweep", "1,10", "--plot", str(png))
    assert doc["results"] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_annotation_section(tmp_path: Path) -> None:
    """Given a row count, the annotation run reports time and peak memory per store."""
    doc = _bench_json(tmp_path, "--stores", "memory,sqlite", "--annotate-rows", "1000", "--no-table")
    runs = [(r["backend"], r["mask"]) for r in doc["annotations"]]
    assert runs == [("memory", "slice"), ("memory", "random"), ("sqlite", "slice"), ("sqlite", "random")]
    for run in doc["annotations"]:
        assert run["rows"] == 1000
        assert "error" not in run and run["seconds"] >= 0 and run["peak_mib"] >= 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "0"], "--processes must be at least 1"),
        (["--processes", "two"], "invalid int value"),
        (["--modes", "per-call,turbo"], "unknown mode(s) turbo"),
        (["--modes", ","], "no mode given"),
        (["--stores", ""], "no store given"),
        (["--sweep", "1,0"], "at least 1"),
        (["--sweep", "1,ten"], "positive integers"),
        (["--annotate-rows", "0"], "--annotate-rows must be at least 1"),
        (["--plot", "/no/such/dir/x.png"], "does not exist"),
        (["--plot", "bench.txt"], ".png"),
        (["--no-table"], "leaves nothing to run"),
        (["--shard-urls", "redis://a,redis://b"], "--shard-urls goes with --shards"),
    ],
)
def test_bench_rejects_bad_flag_values(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    flags = ("--modes", "--processes", "--sweep", "--annotate-rows", "--shards", "--engine", "--engine-keys")
    for flag in (*flags, "--engine-workers", "--plot", "--progress", "--quick"):
        assert flag in out


@pytest.mark.servers
def test_bench_shards_section(tmp_path: Path) -> None:
    """--shards starts three throwaway Redis servers and runs the sharding benchmark on them."""
    doc = _bench_json(tmp_path, "--stores", "memory", "--no-table", "--shards")
    report = doc["sharding"]
    if "unavailable" in report:
        pytest.skip(report["unavailable"])
    assert report["keys"] == 300 and len(report["servers"]) == 3
    assert report["single"]["overall"] > 0 and report["sharded"]["overall"] > 0
