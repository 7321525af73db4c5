"""``ctx bench`` progress: a tqdm bar, plain lines on stderr, or nothing."""

from __future__ import annotations

import io

from context_framework.bench.progress import Progress


def test_lines_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream)
    assert not progress.use_bar
    progress.note("connecting to redis")
    with progress.task("sweep", 2) as task:
        task.step("size 1")
        task.step("size 10")
    assert stream.getvalue().splitlines() == [
        "  connecting to redis",
        "  [1/2] sweep: size 1",
        "  [2/2] sweep: size 10",
    ]


def test_silent_says_nothing() -> None:
    stream = io.StringIO()
    progress = Progress(enabled=False, bar=True, stream=stream)
    progress.note("x")
    with progress.task("t", 3) as task:
        task.step("a")
    assert stream.getvalue() == "" and not progress.use_bar


def test_forced_bar_draws_with_tqdm() -> None:
    stream = io.StringIO()
    progress = Progress(bar=True, stream=stream)
    assert progress.use_bar
    with progress.task("spec table", 2) as task:
        task.step("run 1")
        progress.note("a note above the bar")
        task.step("run 2")
    out = stream.getvalue()
    assert "spec table" in out and "a note above the bar" in out and "run 2" in out


def test_a_callable_gets_the_lines() -> None:
    lines: list[str] = []
    progress = Progress.coerce(lines.append)
    with progress.task("t", 1) as task:
        task.step("only")
    assert lines == ["[1/1] t: only"]
    assert not Progress.coerce(None).enabled
