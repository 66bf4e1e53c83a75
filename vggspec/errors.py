"""UserError: a mistake on the command line or in a config, told in one message."""

from vggspec.compiler.errors import VggspecError


class UserError(VggspecError):
    """Printed as `vggspec: error: <message>` with exit status 2, never as a traceback."""


def check_output(path, flag: str, folder: bool = False) -> None:
    """Before any work: `path` (a file, or with `folder` a folder) can be written. Missing
    parent folders are created, as the writers do."""
    import os
    from pathlib import Path

    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a folder")
    if not folder and target.is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file name")
    parent = target if folder else target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot create {parent} ({err.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {path}: {parent} is not writable")
    from vggspec.runtime.io.atomic import cannot_create_in

    reason = cannot_create_in(parent)  # os.access says yes to root, also in /proc
    if reason:
        raise UserError(f"{flag} {path}: cannot create files in {parent} ({reason})")
