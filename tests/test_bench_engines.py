"""``ctx bench --engine``: Spark, Dask and MPI writers on one shared store, wired into ``ctx bench``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from context_framework.bench.engines import ENGINES, engine_unavailable, parse_engines
from context_framework.bench.plot import plot_results
from context_framework.bench.run import format_report
from context_framework.cli import main

TINY = ["--engine-keys", "200", "--engine-workers", "2"]


def _engine_doc(tmp_path: Path, *args: str) -> dict[str, Any]:
    target = tmp_path / "bench.json"
    assert main(["bench", "--no-table", *TINY, "-o", str(target), *args]) == 0
    return dict(json.loads(target.read_text()))


def _row_name(r: dict[str, Any]) -> str:
    return f"{r['engine']} {r['mode']}" if r.get("mode") else str(r["engine"])


def _check_runs(runs: list[dict[str, Any]]) -> None:
    for r in runs:
        assert "error" not in r and "unavailable" not in r, r
        assert (r["partitions"], r["keys_per_writer"], r["keys"]) == (2, 200, 400)
        assert r["keys_per_s"] > 0 and r["baseline_keys_per_s"] > 0 and r["ratio"] > 0
        assert 0 < r["write_s"] <= r["wall_s"]


def test_parse_engines() -> None:
    assert parse_engines("mpi, dask") == ("dask", "mpi")  # the table's order
    assert parse_engines("all") == parse_engines("ALL,mpi") == ENGINES
    with pytest.raises(ValueError, match="unknown engine\\(s\\) flink; choose from spark, dask, mpi or all"):
        parse_engines("dask,flink")
    with pytest.raises(ValueError, match="no engine given"):
        parse_engines(" , ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "flink"], "unknown engine(s) flink"),
        (["--engine", ""], "no engine given"),
        (["--engine", "dask", "--engine-keys", "0"], "--engine-keys must be at least 1, got 0"),
        (["--engine", "dask", "--engine-workers", "-2"], "--engine-workers must be at least 1, got -2"),
        (["--engine", "dask", "--engine-keys", "ten"], "invalid int value"),
        (["--engine-keys", "100"], "--engine-keys goes with --engine"),
        (["--engine-workers", "2"], "--engine-workers goes with --engine"),
        (["--no-table"], "--shards or --engine"),
    ],
)
def test_bad_values_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err


def test_dask_and_mpi_on_sqlite_and_redis(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every partition/rank writes its keys; one row per engine (MPI: per mode) and store, a plot panel."""
    for engine in ("dask", "mpi"):
        if engine_unavailable(engine):
            pytest.skip(f"{engine}: {engine_unavailable(engine)}")
    png = tmp_path / "engines.png"
    doc = _engine_doc(
        tmp_path,
        "--engine",
        "mpi,dask",
        "--stores",
        "memory,sqlite,redis",
        "--redis-url",
        redis_url,
        "--plot",
        str(png),
        "--progress",
    )
    runs = doc["engines"]
    assert [(_row_name(r), r["store"]) for r in runs] == [
        ("dask", "sqlite"),
        ("dask", "redis"),
        ("mpi direct", "sqlite"),
        ("mpi aggregate", "sqlite"),
        ("mpi direct", "redis"),
        ("mpi aggregate", "redis"),
    ]
    _check_runs(runs)
    assert {r["processes"] for r in runs if r["engine"] == "dask"} <= {1, 2}
    assert doc["results"] == [] and "sharding" not in doc
    assert any("engines on memory: left out" in n for n in doc["notes"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "dask on sqlite" in err and "mpi on redis" in err  # one progress step per run
    text = format_report(doc)
    assert "| Engine" in text and "| mpi aggregate | RedisContextStore" in text
    assert "4 partitions" not in text and "2 partitions on" in text and "2 ranks" in text


def test_missing_engine_is_a_row_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without pyspark or mpi4py the table says "unavailable (reason)" and the run goes on."""
    monkeypatch.setitem(sys.modules, "pyspark", None)  # find_spec and import now fail
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert main(["bench", "--no-table", "--engine", "spark,mpi", "--stores", "sqlite", "-q"]) == 0
    out = capsys.readouterr().out
    assert "| spark  | -     | unavailable (pyspark is not installed" in out
    assert "| mpi    | -     | unavailable (mpi4py is not installed" in out
    assert "Note: engine spark unavailable" in out
    doc = _engine_doc(tmp_path, "--engine", "spark", "--stores", "sqlite")
    assert doc["engines"] == [
        {
            "engine": "spark",
            "mode": None,
            "store": "",
            "label": "-",
            "unavailable": "pyspark is not installed (pip install pyspark)",
        }
    ]
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_results(doc, str(tmp_path / "none.png"))
    png = tmp_path / "none.png"
    assert main(["bench", "--no-table", "--engine", "spark", "--stores", "sqlite", "--plot", str(png)]) == 0
    captured = capsys.readouterr()
    assert "no plot written (nothing to plot" in captured.err and "unavailable (pyspark" in captured.out
    assert not png.exists() and "Plot written" not in captured.out


@pytest.mark.slow
def test_spark_on_sqlite_and_redis(tmp_path: Path, redis_url: str) -> None:
    """Spark in local mode (about 15 s to start per run): executors write, the driver checks the count."""
    reason = engine_unavailable("spark")
    if reason:
        pytest.skip(reason)
    doc = _engine_doc(
        tmp_path, "--engine", "spark", "--stores", "sqlite,redis", "--redis-url", redis_url, "-q"
    )
    runs = doc["engines"]
    assert [(r["engine"], r["store"]) for r in runs] == [("spark", "sqlite"), ("spark", "redis")]
    _check_runs(runs)
    assert all(r["writers"].startswith("2 partitions on local[") for r in runs)
