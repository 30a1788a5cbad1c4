"""The dependency floors (issue 14, item 11): torch at 2.6 or later, where
``torch.load(weights_only=True)`` can no longer be bypassed (CVE-2025-32434), torchvision
at the release made with it, and .ci/lowest installing exactly these floors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def floors() -> dict[str, tuple[int, ...]]:
    """Package -> its lower bound in pyproject.toml: the dependencies and the extras that
    .ci/lowest installs (dev, and the extras dev names); not the tools run by hand (mutation)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    named = {"dev"} | {
        e.strip() for s in extras["dev"] for m in [re.match(r"ablate\[(.*)\]", s)] if m for e in m.group(1).split(",")
    }
    specs = list(project["dependencies"]) + [s for name in named for s in extras[name]]
    out = {}
    for spec in specs:
        m = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9.]+)", spec)
        if m:
            out[m.group(1).lower()] = tuple(int(p) for p in m.group(3).split("."))
    return out


def pins() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (ROOT / ".ci" / "lowest-constraints.txt").read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.-]+)==([0-9.]+)", line.strip())
        if m:
            out[m.group(1).lower()] = tuple(int(p) for p in m.group(2).split("."))
    return out


def test_torch_is_at_least_2_6_and_torchvision_is_its_companion():
    f = floors()
    assert f["torch"] >= (2, 6)
    assert f["torchvision"][:2] == (0, f["torch"][1] + 15)  # torch 2.6 <-> torchvision 0.21, 2.7 <-> 0.22


def test_ci_lowest_installs_exactly_the_floors():
    f, p = floors(), pins()
    for name, floor in f.items():
        assert name in p, f"{name} has a floor in pyproject.toml but no pin in .ci/lowest-constraints.txt"
        padded = floor + (0,) * (len(p[name]) - len(floor))
        assert p[name] == padded, (name, floor, p[name])


def test_the_readme_names_the_torch_floor():
    major, minor = floors()["torch"][:2]
    assert f"torch {major}.{minor}," in (ROOT / "README.md").read_text()
