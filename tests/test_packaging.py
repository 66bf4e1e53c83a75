"""What an install ships, and under which names: every package, the built-in specs, and
only `vggspec` at the top of site-packages (compiler/ and runtime/ install as
vggspec.compiler and vggspec.runtime)."""

from __future__ import annotations

import ast
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

ROOT = Path(__file__).resolve().parent.parent
INSTALLED_AS = {"vggspec": "vggspec", "compiler": "vggspec.compiler", "runtime": "vggspec.runtime"}


def setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed_under_its_installed_name():
    on_disk = {
        ".".join([INSTALLED_AS[top], *init.parent.relative_to(ROOT / top).parts])
        for top in INSTALLED_AS
        for init in (ROOT / top).rglob("__init__.py")
    }
    listed = set(setuptools_table()["packages"])
    assert on_disk - listed == set(), "packages a wheel would leave out"
    assert listed - on_disk == {"vggspec.specs"}
    assert setuptools_table()["package-dir"] == {
        "vggspec.compiler": "compiler",
        "vggspec.runtime": "runtime",
        "vggspec.specs": "specs",
    }


def test_specs_ship_as_package_data():
    table = setuptools_table()
    patterns = table["package-data"]["vggspec.specs"]
    shipped = {p.name for pattern in patterns for p in (ROOT / "specs").glob(pattern)}
    assert shipped == {p.name for p in (ROOT / "specs").iterdir() if p.is_file()}
    assert {"demo.yaml", "demo.vgg", "paper.yaml", "A.vgg", "E.vgg"} <= shipped


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_no_module_test_or_bench_imports_the_bare_names():
    offenders = []
    for folder in ("vggspec", "compiler", "runtime", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for line, module in _imported_modules(path):
                if module.split(".")[0] in ("compiler", "runtime"):
                    offenders.append(f"{path.relative_to(ROOT)}:{line}: import {module}")
    assert offenders == []


def test_imports_go_one_way_vggspec_runtime_compiler():
    """compiler imports nothing of ours but itself; runtime never imports the face."""
    offenders = []
    for folder, forbidden in (
        ("compiler", ("vggspec.runtime", "vggspec.commands")),
        ("runtime", ("vggspec.commands", "vggspec.cli", "vggspec.api")),
    ):
        for path in (ROOT / folder).rglob("*.py"):
            for line, module in _imported_modules(path):
                if module.startswith(forbidden) or (folder == "compiler" and module == "vggspec"):
                    offenders.append(f"{path.relative_to(ROOT)}:{line}: import {module}")
    assert offenders == []


def test_a_wheel_in_a_fresh_venv_compiles_and_trains_from_another_folder(tmp_path):
    """Build a wheel, install it (without dependencies) into a new venv that sees this
    environment's dependencies but not its editable vggspec, then from an empty folder run
    `vggspec compile specs/E.vgg` and a 3-step `vggspec run train`."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("vggspec-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    fresh_site = Path(
        sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    )
    # The dependencies (torch, lark, …) from this environment, as a plain path entry: the
    # .pth files there (among them the editable vggspec's import hook) are not run.
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(fresh_site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    top = {p.name for p in fresh_site.iterdir()}
    assert "vggspec" in top and not {"compiler", "runtime"} & top
    python = venv / "bin" / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["VGGSPEC_DEMO_DATA"] = str(tmp_path / "demo-data")

    def vggspec(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(python), "-m", "vggspec", *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    where = subprocess.run(
        [str(python), "-c", "import vggspec.compiler as c, vggspec.runtime as r;"
         "print(c.__file__); print(r.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(fresh_site) for p in where), where
    compiled = vggspec("compile", "specs/E.vgg")
    assert compiled.returncode == 0, compiled.stderr
    assert "143,667,240" in compiled.stdout
    trained = vggspec(
        "run", "train", "--config", "specs/demo.yaml", "max_steps=3", "out=run", "workers=0"
    )
    assert trained.returncode == 0, trained.stderr
    assert "finished: 3 steps" in trained.stdout
    assert (elsewhere / "run" / "model.safetensors").is_file()


def test_the_public_api_is_one_list_and_every_name_in_it_resolves():
    import vggspec
    from vggspec import api

    assert api.__all__ == list(vggspec.TORCH_API)  # api's list is the package's
    missing = [name for name in vggspec.__all__ if not hasattr(vggspec, name)]
    assert missing == [] and len(vggspec.__all__) == len(set(vggspec.__all__))
    assert vggspec.build_net is api.build_net and vggspec.RunDir is api.RunDir
