"""UserError: a mistake on the command line or in a config, told in one message."""

from vggspec.compiler.errors import VggspecError


class UserError(VggspecError):
    """Printed as `vggspec: error: <message>` with exit status 2, never as a traceback."""


def check_output(path, flag: str, folder=False, inputs=(), within=(), create=True) -> None:
    """Before any work: `path` (a file, or with `folder` a folder) can be written, and is
    neither one of `inputs`, nor in one of the input folders `within` (the images), nor a
    file a training run keeps (`-o RUN/model.safetensors` replaced the net it evaluated).
    Missing parent folders are created, as the writers do (not with `create` False: the
    refusals alone, so that a command's outputs are all checked before any folder is made)."""
    import os
    from pathlib import Path

    from vggspec.runtime.io.rundir import RunDir

    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a folder")
    if not folder and target.is_dir():
        raise UserError(f"{flag} {path}: is a folder; give a file name")
    if not folder:
        run = RunDir.containing(target.parent)
        kept = (RunDir.CONFIG, RunDir.SETTINGS, RunDir.LOG, RunDir.METRICS, RunDir.LAST)
        kept += (RunDir.BEST, RunDir.MODEL, RunDir.SUMMARY)
        if run is not None and any(target.resolve() == (run.path / k).resolve() for k in kept):
            raise UserError(f"{flag} {path}: is a file of the training run {run}; write elsewhere")
        for given in filter(None, inputs):  # "" would be the current folder
            if target.exists() and Path(given).exists() and os.path.samefile(target, given):
                raise UserError(f"{flag} {path}: is the input {given}; write elsewhere")
    for given in filter(None, within):
        if target.resolve().is_relative_to(Path(given).resolve()):
            raise UserError(f"{flag} {path}: is in the input folder {given}; write elsewhere")
    if not create:
        return
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


def check_distinct(outputs) -> None:
    """No two of `outputs` ((flag, path) pairs, None for one not asked for) name the same
    file: the last writer's would be all that is left (`--posteriors p.npz -o p.npz`)."""
    from pathlib import Path

    seen = {}
    for flag, path in outputs:
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise UserError(f"{flag} {path}: is also {seen[key][0]} {seen[key][1]}; give two files")
        seen[key] = (flag, path)
