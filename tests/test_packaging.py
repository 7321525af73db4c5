"""The extras a newcomer installs agree with each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
packaging = pytest.importorskip("packaging.requirements")
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _closure(extras: dict[str, list[str]], name: str, seen: set[str] | None = None) -> list[Requirement]:
    """Every requirement an extra pulls in, following ``context-framework[...]`` references."""
    seen = set() if seen is None else seen
    if name in seen:
        return []
    seen.add(name)
    out: list[Requirement] = []
    for text in extras[name]:
        req = Requirement(text)
        if req.name == "context-framework":
            for inner in sorted(req.extras):
                out += _closure(extras, inner, seen)
        else:
            out.append(req)
    return out


def _specifier(extras: dict[str, list[str]], extra: str, package: str) -> SpecifierSet:
    spec = SpecifierSet()
    for req in _closure(extras, extra):
        if re.sub(r"[-_.]+", "-", req.name).lower() == package:
            spec &= req.specifier
    return spec


@pytest.mark.parametrize("package", ["pandas", "numpy"])
def test_bench_and_test_extras_allow_the_same_versions(package: str) -> None:
    # [bench] installed first and [test] after must not move a package to another major version.
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    bench, test = _specifier(extras, "bench", package), _specifier(extras, "test", package)
    candidates = [f"{major}.{minor}.0" for major in range(1, 5) for minor in range(0, 6)]
    assert [v for v in candidates if v in bench] == [v for v in candidates if v in test]
