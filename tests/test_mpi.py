"""MPIContext: rank-scoped context of MPI programs in a shared store (mpi4py, ``mpiexec -n 4``).

In-process tests use ``MPI.COMM_SELF`` (one rank). The rest start real MPI
jobs with the ``mpiexec`` of the ``mpich`` wheel: the example script against
the Redis and PostgreSQL of the fixtures (10,000 keys per rank, as the issue
asks), a scenario script (errors on every rank, writer per node, gather
rounds, reruns), and the benchmark. Each job works in its own namespace,
removed afterwards. Without mpi4py or ``mpiexec`` the tests skip, except under
``CI=true``, where that is a failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from context_framework import InMemoryContextStore, open_store
from context_framework.exceptions import (
    ContextConfigurationError,
    ContextSerializationError,
    MissingDependencyError,
    UnsupportedKeyError,
)
from context_framework.mpi import MPIContext, find_mpiexec
from context_framework.testing.fixtures import IN_CI

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mpi_context.py"
RANKS = 4
#: Namespaces (under a job's own) where the example and the scenarios write: removed after each test.
WRITTEN = ("direct", "aggregate", "fail_direct", "fail_aggregate", "node", "pairs", "lazy", "get")


def _require(ok: bool, reason: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def MPI() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        _require(False, "mpi4py is not installed: pip install 'context-framework[mpi]'")
    return MPI


@pytest.fixture(scope="module")
def mpiexec(MPI: Any) -> str:
    path = find_mpiexec()
    _require(path is not None, "no mpiexec beside this Python or on PATH (pip install mpich)")
    assert path is not None
    return path


def _mpirun(mpiexec: str, ranks: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    cmd = [mpiexec, "-n", str(ranks), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _last_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def scratch(request: pytest.FixtureRequest, unique_name: str) -> Iterator[tuple[str, str]]:
    """(store URL, namespace) for one job, the namespace removed afterwards."""
    url = request.getfixturevalue(request.param) if request.param.endswith("_url") else request.param
    yield url, unique_name
    with open_store(url) as store:
        job = store.with_namespace(unique_name)
        job.clear()
        for name in WRITTEN:  # a namespace does not hold its sub-namespaces: clear each
            job.with_namespace(f"{name}/MPI_COMM_WORLD").clear()


def test_without_mpi4py_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(MissingDependencyError, match=r"context-framework\[mpi\]"):
        MPIContext(InMemoryContextStore())


# --------------------------------------------------------------------------- in-process (COMM_SELF)


@pytest.fixture
def self_ctx(MPI: Any) -> Iterator[tuple[InMemoryContextStore, MPIContext]]:
    store = InMemoryContextStore()
    ctx = MPIContext(store, MPI.COMM_SELF)
    yield store, ctx
    ctx.close()


def test_keys_are_scoped_by_rank_in_the_communicators_namespace(self_ctx: Any) -> None:
    store, ctx = self_ctx
    assert ctx.name == "MPI_COMM_SELF" and ctx.rank == 0 and ctx.size == 1
    ctx.add(("row", 7), {"a": 1})
    ctx.add("label", {"b": 2})  # a single part
    ctx.add_rank_context({"host": "n1"})
    ctx.add(("job",), {"c": 3}, scoped=False)
    assert len(ctx) == 4 and ctx.get(("row", 7)) == {"a": 1}  # read-your-writes before commit
    assert ctx.commit() == 4 and len(ctx) == 0
    view = store.with_namespace("MPI_COMM_SELF")
    assert sorted(view.list_keys(), key=repr) == sorted(
        [("rank", 0, "row", 7), ("rank", 0, "label"), ("rank", 0), ("job",)], key=repr
    )
    assert store.count() == 0  # nothing outside the communicator's namespace
    assert ctx.get(("row", 7)) == {"a": 1} and ctx.get(("job",), scoped=False) == {"c": 3}
    assert ctx.key("row", 7) == ("rank", 0, "row", 7) and ctx.stats["entries"] == 4


def test_a_later_add_replaces_and_equal_keys_are_one(self_ctx: Any) -> None:
    _, ctx = self_ctx
    np = pytest.importorskip("numpy")
    Row = namedtuple("Row", "kind label")
    ctx.add(("row", 1), {"v": 1})
    ctx.add(Row("row", np.int64(1)), {"v": 2})  # the same key, normalised
    ctx.add(("row", True), {"v": 3})  # a different key: bool is not int
    assert len(ctx) == 2
    ctx.commit()
    assert ctx.get(("row", 1)) == {"v": 2} and ctx.get(("row", True)) == {"v": 3}
    view = ctx.merged_view()
    assert len(view) == 2 and {type(k[3]) for k, _ in view} == {bool, int}


def test_bad_input_raises_at_add_and_records_nothing(self_ctx: Any) -> None:
    _, ctx = self_ctx
    with pytest.raises(ContextSerializationError):
        ctx.add_many([(("row", 1), {"ok": 1}), (("row", 2), {"bad": object()})])
    with pytest.raises(UnsupportedKeyError):
        ctx.add_many([(("row", 1), {"ok": 1}), (("row", object()), {"ok": 2})])
    assert len(ctx) == 0
    stored = {"x": [1, 2]}
    ctx.add(("row", 3), stored)
    stored["x"].append(3)  # the caller's dict is copied at add
    ctx.commit()
    assert ctx.get(("row", 3)) == {"x": [1, 2]} and ctx.commit() == 0


def test_direct_mode_sends_full_batches_before_commit(MPI: Any) -> None:
    store = InMemoryContextStore()
    with MPIContext(store, MPI.COMM_SELF, batch_size=3) as ctx:
        ctx.add_many({("row", i): {"i": i} for i in range(5)})
        assert ctx.store.count() == 5 and len(ctx) == 0  # one add_many, sent in batches of 3
        ctx.add(("row", 9), {"i": 9})
        assert ctx.store.count() == 5 and len(ctx) == 1
    assert store.with_namespace("MPI_COMM_SELF").count() == 6  # the with block committed


def test_aggregate_mode_keeps_writes_until_commit(MPI: Any) -> None:
    store = InMemoryContextStore()
    ctx = MPIContext(store, MPI.COMM_SELF, mode="aggregate", batch_size=4)
    assert ctx.is_writer
    ctx.add_many([((i,), {"i": i}) for i in range(10)])
    assert ctx.store.count() == 0 and ctx.get((3,)) == {"i": 3}
    assert ctx.commit() == 10 and ctx.store.count() == 10
    assert ctx.stats["write_s"] > 0 and ctx.stats["entries"] == 10
    ctx.close()


def test_an_exception_in_the_with_block_commits_nothing(MPI: Any) -> None:
    store = InMemoryContextStore()
    with pytest.raises(RuntimeError), MPIContext(store, MPI.COMM_SELF, mode="aggregate") as ctx:
        ctx.add(("row", 1), {"a": 1})
        raise RuntimeError("boom")
    assert store.with_namespace("MPI_COMM_SELF").count() == 0 and ctx.closed
    with pytest.raises(ContextConfigurationError, match="closed"):
        ctx.add(("row", 1), {"a": 1})


def test_replace_removes_an_earlier_runs_rank_keys_only(MPI: Any) -> None:
    store = InMemoryContextStore()
    for run in (1, 2):
        with MPIContext(store, MPI.COMM_SELF) as ctx:
            ctx.add_many({("row", i): {"run": run} for i in range(10 // run)})
            ctx.add(("job",), {"run": run}, scoped=False)
    ns = store.with_namespace("MPI_COMM_SELF")
    assert ns.count(("rank",)) == 5 and ns.get(("job",)) == {"run": 2}
    with MPIContext(store, MPI.COMM_SELF, replace=False) as ctx:
        ctx.add(("extra",), {"run": 3})
    assert ns.count(("rank",)) == 6


def test_merged_view_is_sorted_and_reads_the_store(MPI: Any) -> None:
    store = InMemoryContextStore()
    with MPIContext(store, MPI.COMM_SELF, name="job/world") as ctx:
        ctx.add_many({("row", i): {"i": i} for i in (5, 1, 3)})
        ctx.add(("col", "b"), {"c": 1})
        view = ctx.merged_view()  # commits first
        assert [k for k, _ in view] == [("rank", 0, "col", "b")] + [("rank", 0, "row", i) for i in (1, 3, 5)]
        assert ctx.merged_view(("rank", 0, "col")) == [(("rank", 0, "col", "b"), {"c": 1})]
        assert ctx.clear() == 4 and ctx.merged_view() == []
    assert ctx.store.namespace == "job/world"


def test_a_store_url_is_opened_and_closed(MPI: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ctx.db'}"
    ctx = MPIContext(url, MPI.COMM_SELF, mode="aggregate")
    ctx.add(("row", 1), {"a": 1})
    ctx.close()  # unsent writes are dropped, the store it opened is closed
    assert ctx.store.closed
    with MPIContext(url, MPI.COMM_SELF) as ctx:
        ctx.add(("row", 2), {"a": 2})
    with open_store(url) as store:
        assert store.with_namespace("MPI_COMM_SELF").list_keys() == [("rank", 0, "row", 2)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "gather"}, "mode"),
        ({"writer": "rack"}, "writer"),
        ({"writer": 0}, "writer"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"name": ""}, "no name"),
    ],
)
def test_bad_options(MPI: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ContextConfigurationError, match=match):
        MPIContext(InMemoryContextStore(), MPI.COMM_SELF, **kwargs)


def test_an_unnamed_communicator_needs_a_name(MPI: Any) -> None:
    comm = MPI.COMM_SELF.Dup()
    try:
        with pytest.raises(ContextConfigurationError, match="Set_name"):
            MPIContext(InMemoryContextStore(), comm)
        comm.Set_name("solver")
        with MPIContext(InMemoryContextStore(), comm) as ctx:
            assert ctx.name == "solver"
        with pytest.raises(TypeError, match="store"):
            MPIContext({"not": "a store"}, comm)  # type: ignore[arg-type]
        with pytest.raises(ContextConfigurationError, match="intracommunicator"):
            MPIContext(InMemoryContextStore(), "world")
    finally:
        comm.Free()


# --------------------------------------------------------------------------- mpiexec -n 4: the example


@pytest.mark.parametrize("scratch", ["redis_url", "postgres_url"], indirect=True)
def test_example_every_rank_writes_10000_keys_in_each_mode(mpiexec: str, scratch: tuple[str, str]) -> None:
    url, namespace = scratch
    n = 10_000
    proc = _mpirun(mpiexec, RANKS, str(EXAMPLE), "--store", url, "--namespace", namespace, "--keep")
    result = _last_json(proc)
    assert result["ok"] and result["ranks"] == RANKS and result["namespace"] == namespace
    digests = set()
    with open_store(url) as store:
        for mode in ("direct", "aggregate"):
            r = result["modes"][mode]
            assert r["stored"] == r["view_entries"] == RANKS * n and r["view_identical"] and r["types_intact"]
            digests.add(r["view_sha256"])
            # What the driver sees afterwards: exactly these keys, types intact.
            ns = store.with_namespace(f"{namespace}/{mode}/MPI_COMM_WORLD")
            keys = ns.list_keys()
            assert len(keys) == RANKS * n
            assert all(type(k[1]) is int and type(k[3]) is int for k in keys)
            assert set(keys) == {("rank", r, "row", r * n + i) for r in range(RANKS) for i in range(n)}
            assert ns.get(("rank", 3, "row", 3 * n + 7)) == {"rank": 3, "step": "normalised", "i": 7}
    assert len(digests) == 1  # the same context, whichever mode wrote it
    assert "identical on every rank" in proc.stdout


@pytest.mark.parametrize("scratch", ["redis_url"], indirect=True)
def test_example_cleans_up_and_reruns_replace(mpiexec: str, scratch: tuple[str, str]) -> None:
    url, namespace = scratch
    args = (str(EXAMPLE), "--store", url, "--namespace", namespace, "--keys", "300")
    _last_json(_mpirun(mpiexec, RANKS, *args, "--keep", "--writer", "node"))
    rerun = _last_json(_mpirun(mpiexec, 2, *args, "--keep", "--modes", "aggregate"))
    assert rerun["modes"]["aggregate"]["stored"] == 600  # ranks 2 and 3 of the first run are gone
    with open_store(url) as store:
        job = store.with_namespace(namespace)
        assert job.with_namespace("direct/MPI_COMM_WORLD").count() == RANKS * 300
        assert {k[1] for k in job.with_namespace("aggregate/MPI_COMM_WORLD").list_keys()} == {0, 1}
    result = _last_json(_mpirun(mpiexec, 2, *args))
    assert result["ok"] and result["modes"]["direct"]["stored"] == 600
    with open_store(url) as store:  # without --keep the run removes what it wrote (and replaced)
        job = store.with_namespace(namespace)
        assert sum(job.with_namespace(f"{m}/MPI_COMM_WORLD").count() for m in ("direct", "aggregate")) == 0


# --------------------------------------------------------------------------- mpiexec -n 4: scenarios

SCENARIOS = textwrap.dedent(
    '''
    """Scenarios on 4 ranks; rank 0 prints the gathered outcomes as JSON."""
    import json
    import sys

    from mpi4py import MPI

    from context_framework import open_store
    from context_framework.exceptions import ContextConfigurationError, ContextStoreError
    from context_framework.mpi import MPIContext

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    store = open_store(sys.argv[1]).with_namespace(sys.argv[2])
    out = {}

    def outcome(fn):
        try:
            return ["ok", fn()]
        except (ContextConfigurationError, ContextStoreError) as exc:
            return [type(exc).__name__, str(exc)]

    # A store failing on one rank (direct) or on the writer (aggregate): every rank raises.
    for mode, failing in (("direct", 1), ("aggregate", 0)):
        ctx = MPIContext(store.with_namespace("fail_" + mode), comm, mode=mode)
        ctx.add(("row", rank), {"r": rank})
        if rank == failing:
            ctx.store.close()
        out["fail_" + mode] = outcome(ctx.commit)
        ctx.close()

    # One writer per node (all 4 ranks share this machine: one writer), uneven counts, many rounds.
    ctx = MPIContext(store.with_namespace("node"), comm, mode="aggregate", writer="node", batch_size=7)
    ctx.add_many({("row", i): {"r": rank} for i in range(10 * rank + 3)})
    first = ctx.commit()
    ctx.add(("phase",), {"n": 2})
    second = ctx.commit()  # a second commit adds, it removes nothing
    out["node"] = [ctx.is_writer, first, second, ctx.store.count(), ctx.stats["write_s"] > 0]
    view = ctx.merged_view(("rank", 2))
    out["node_view"] = [len(view), all(k[1] == 2 for k, _ in view)]
    ctx.close()

    # One writer per 2 ranks: ranks 0 and 2 write (waiting the MPI way: busy).
    ctx = MPIContext(store.with_namespace("pairs"), comm, mode="aggregate", writer=2, poll_interval=None)
    ctx.add_many({("row", i): {"r": rank} for i in range(5)})
    ctx.commit()
    out["pairs"] = [ctx.is_writer, ctx.stats["write_s"] > 0, ctx.store.count()]
    ctx.close()

    # A store URL in aggregate mode: only the writer (and rank 0) connect; a read connects the reader.
    ctx = MPIContext(sys.argv[1] + "?namespace=" + sys.argv[2] + "/lazy", comm, mode="aggregate", writer=2)
    ctx.add(("row", 1), {"big": "x" * 100})
    ctx.commit()
    opened = ctx._root_store is not None
    value = ctx.get(("row", 1))
    out["lazy"] = [opened, value, ctx._root_store is not None]
    ctx.clear()
    ctx.close()

    # Reads: this rank's unsent writes, then the store (another rank's unscoped key).
    ctx = MPIContext(store.with_namespace("get"), comm, mode="aggregate")
    ctx.add(("mine",), {"r": rank})
    ctx.add(("by", rank), {"r": rank}, scoped=False)
    before = ctx.get(("mine",))
    ctx.commit()
    out["get"] = [before, ctx.get(("by", (rank + 1) % 4), scoped=False), ctx.get(("mine",))]
    ctx.close()

    # Refused: a store only this process sees, a name that differs between ranks.
    out["memory"] = outcome(lambda: MPIContext("memory://", comm))
    out["names"] = outcome(lambda: MPIContext(store, comm, name=f"n{rank}"))
    out["open"] = outcome(lambda: MPIContext(store if rank != 3 else "nosuchscheme://x", comm))

    gathered = comm.gather(out, root=0)
    if rank == 0:
        print(json.dumps(gathered))
    '''
)


@pytest.mark.parametrize("scratch", ["redis_url"], indirect=True)
def test_scenarios_on_four_ranks(mpiexec: str, scratch: tuple[str, str], tmp_path: Path) -> None:
    url, namespace = scratch
    script = tmp_path / "scenarios.py"
    script.write_text(SCENARIOS)
    proc = _mpirun(mpiexec, RANKS, str(script), url, namespace, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(ranks) == RANKS
    for rank, out in enumerate(ranks):
        for mode, failing in (("direct", 1), ("aggregate", 0)):
            kind, message = out["fail_" + mode]
            assert kind == "ContextStoreError" and f"rank {failing}: ContextStoreClosedError" in message
            assert "failed on 1 of 4 ranks" in message
        writer, first, second, count, wrote = out["node"]
        assert writer == (rank == 0) and wrote == (rank == 0)
        assert (first, second) == (10 * rank + 3, 1) and count == sum(10 * r + 3 for r in range(4)) + 4
        assert out["node_view"] == [10 * 2 + 3 + 1, True]
        assert out["pairs"] == [rank % 2 == 0, rank % 2 == 0, 20]
        assert out["lazy"] == [rank % 2 == 0, {"big": "x" * 100}, True]
        assert out["get"] == [{"r": rank}, {"r": (rank + 1) % 4}, {"r": rank}]
        assert out["memory"][0] == "ContextConfigurationError" and "4 ranks" in out["memory"][1]
        assert out["names"][0] == "ContextConfigurationError" and "differs between ranks" in out["names"][1]
        kind, message = out["open"]  # a store rank 3 cannot open: every rank raises, none hangs
        assert kind == "ContextConfigurationError"
        assert "nosuchscheme" in message if rank == 3 else "failed on rank 3: " in message


# --------------------------------------------------------------------------- benchmark


@pytest.mark.parametrize("scratch", ["redis_url"], indirect=True)
def test_bench_reports_every_mode_against_a_single_writer(mpiexec: str, scratch: tuple[str, str]) -> None:
    from context_framework.bench.engine_mpi import format_mpi_bench, run_mpi_bench

    url, namespace = scratch
    url += ("&" if "?" in url else "?") + f"namespace={namespace}"
    result = run_mpi_bench(url, ranks=2, keys_per_rank=500, batch_size=200)
    assert result["ranks"] == 2 and result["keys_per_rank"] == 500 and result["store"] == "redis"
    assert set(result["modes"]) == {"single", "direct", "aggregate"}
    for mode, r in result["modes"].items():
        assert r["stored"] == 1000 and r["seconds"] > 0
        assert r["keys_per_s"] == pytest.approx(1000 / r["seconds"])
        if mode != "single":
            assert r["vs_single"] > 0 and r["view_s"] > 0
    assert result["modes"]["aggregate"]["gather_s"] > 0
    table = format_mpi_bench(result)
    assert "2 ranks x 500 keys on redis" in table and "aggregate" in table
    with open_store(url) as store:  # the benchmark removed what it wrote
        assert store.with_namespace(result["namespace"]).count() == 0


@pytest.mark.parametrize("kwargs", [{"modes": ("gather",)}, {"writer": "rack"}, {"ranks": 0}, {"repeat": 0}])
def test_bench_bad_arguments(kwargs: dict[str, Any]) -> None:
    from context_framework.bench.engine_mpi import run_mpi_bench

    with pytest.raises(ContextConfigurationError):
        run_mpi_bench("redis://localhost", **kwargs)
