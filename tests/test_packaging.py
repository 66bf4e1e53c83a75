"""What a non-editable install (a wheel) ships: every package and the built-in specs."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

ROOT = Path(__file__).resolve().parent.parent


def setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed():
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("vggspec", "compiler", "runtime")
        for init in (ROOT / top).rglob("__init__.py")
    }
    listed = set(setuptools_table()["packages"])
    assert on_disk - listed == set(), "packages a wheel would leave out"
    assert "vggspec.specs" in listed


def test_specs_ship_as_package_data():
    table = setuptools_table()
    assert table["package-dir"]["vggspec.specs"] == "specs"
    patterns = table["package-data"]["vggspec.specs"]
    shipped = {p.name for pattern in patterns for p in (ROOT / "specs").glob(pattern)}
    assert shipped == {p.name for p in (ROOT / "specs").iterdir() if p.is_file()}
    assert {"demo.yaml", "demo.vgg", "paper.yaml", "A.vgg", "E.vgg"} <= shipped
