"""Where the built-in specs and run recipes live: specs/ beside vggspec/ in a source
checkout, vggspec/specs once installed (pyproject.toml ships specs/ there)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
SPECS = _PACKAGE / "specs" if (_PACKAGE / "specs").is_dir() else _PACKAGE.parent / "specs"
# The folder that holds specs/, against which `specs/A.vgg` is read when it is not a
# file of the working directory.
HOME = SPECS.parent
DEMO_RECIPE = SPECS / "demo.yaml"


def locate(path: str | Path) -> Path:
    """`path` as given when it exists (or is not a built-in name); otherwise the built-in
    file it names, so that `vggspec compile specs/E.vgg` works from any folder."""
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute():
        return given
    builtin = HOME / given
    return builtin if builtin.is_file() else given
