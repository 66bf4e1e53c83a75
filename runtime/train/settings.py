"""A run's settings, fixed at its start: recorded with digests, and what --resume may change.

The run folder keeps two files of them. settings.json is the record: every resolved
setting, the spec's canonical text, and a sha256 of each. config.yaml is the same settings
for people (and for `--config RUN/config.yaml out=NEW`, which starts a new run from them),
headed by the settings' digest. Both are rewritten at every start, since the resumable
settings (how long a run goes and how it reports) may change on the command line.

--resume takes the settings and the spec from the record, not from config.yaml or the spec
file: an edited config.yaml is refused, naming the keys that changed, and an edited spec
file is left aside with a warning. A config.yaml whose header digest matches its own values
is a record too (one written by a start killed between the two files), and may differ from
settings.json in resumable settings only.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import yaml
from vggspec.compiler import Spec, SpecError, format_spec, load_spec, parse

from ..io.atomic import atomic_write
from ..io.rundir import RunDir
from .config import ConfigError, TrainConfig, make_config, parse_overrides, read_yaml

FORMAT = "vggspec-settings/1"
# Settings that may change when a run is resumed: how long and how it reports, not what.
RESUMABLE = frozenset({"epochs", "max_steps", "checkpoint_every", "log_every", "workers"})
# Where a run is, not what it is: a copied or moved run folder resumes where it lies.
_PLACE = "out"
_HEADER_DIGEST = re.compile(r"^# sha256 of the settings \(out aside\): ([0-9a-f]{64})$", re.M)


def settings_digest(values: dict) -> str:
    """sha256 of the settings (`out` aside) as canonical JSON: key order and YAML's
    spelling of numbers do not count."""
    kept = {k: v for k, v in values.items() if k != _PLACE}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def spec_text(spec: Spec) -> str:
    """The spec's canonical text (the printer's): what the net is, comments and spacing
    aside."""
    return format_spec(spec)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record(cfg: TrainConfig, spec: Spec, run: RunDir) -> None:
    """Write settings.json, then config.yaml, for a run starting (or resuming) with `cfg`,
    into `run` (cfg.out, or the staging folder of an --overwrite, which will take its name)."""
    values = cfg.to_dict()
    digest = settings_digest(values)
    text = spec_text(spec)
    entry = {
        "format": FORMAT,
        "settings": values,
        "settings_sha256": digest,
        "spec": text,
        "spec_sha256": text_digest(text),
    }
    body = json.dumps(entry, indent=2) + "\n"
    atomic_write(run.settings, lambda tmp: Path(tmp).write_text(body))
    header = (
        "# The settings of this run, fixed at its start. `vggspec run train --resume` takes them\n"
        f"# from {RunDir.SETTINGS} and refuses this file once it is edited; a new run from them:\n"
        f"#   vggspec run train --config {RunDir(cfg.out).config} out=NEW_FOLDER\n"
        f"# sha256 of the settings (out aside): {digest}\n"
    )
    yaml_text = header + yaml.safe_dump(values, sort_keys=False)
    atomic_write(run.config, lambda tmp: Path(tmp).write_text(yaml_text))


def is_record(run: RunDir) -> bool:
    """Whether `run` holds a record of a run's settings written by a start: settings.json in
    this format, or a config.yaml headed by the settings' digest."""
    try:
        if run.settings.is_file():
            entry = json.loads(run.settings.read_text(encoding="utf-8"))
            if isinstance(entry, dict) and entry.get("format") == FORMAT:
                return True
        if run.config.is_file():
            with run.config.open(encoding="utf-8", errors="replace") as f:
                head = f.read(4096)  # the header; a config.yaml of one's own may be anything
            return _HEADER_DIGEST.search(head) is not None
    except (OSError, ValueError):
        pass
    return False


def _recorded(run: RunDir) -> tuple[dict, str]:
    """(settings, canonical spec text) as the run recorded them: settings.json, or for a run
    written before it existed, its last checkpoint's."""
    if run.settings.is_file():
        try:
            entry = json.loads(run.settings.read_text(encoding="utf-8"))
            values, text = entry["settings"], entry["spec"]
            intact = entry["settings_sha256"] == settings_digest(values) and entry[
                "spec_sha256"
            ] == text_digest(text)
        except (OSError, ValueError, KeyError, TypeError):
            intact = False
        if not intact:
            raise ConfigError(
                f"{run.settings}: damaged or edited (its digests do not match), so this run's "
                f"settings are unknown; start a new run: vggspec run train --config "
                f"{run.config} out=NEW_FOLDER"
            )
        return values, text
    from ..io.checkpoint import load_checkpoint

    if not run.last.is_file():
        raise ConfigError(f"{run}: nothing to resume (no {RunDir.LAST})")
    state = load_checkpoint(run.last)
    return dict(state["config"]), state["spec"]


def _shown_change(key: str, old, new) -> str:
    return f"{key} (deleted)" if new is _MISSING else f"{key} ({old!r} → {new!r})"


_MISSING = object()


def _check_config_file(
    run: RunDir, recorded: dict, overridden: set[str], advice: str | None = None
) -> None:
    """Refuse a config.yaml that says other settings than the record (`overridden`: given
    on the command line, which decides them); `advice` ends the message, else --resume's."""
    raw = read_yaml(run.config)
    header = _HEADER_DIGEST.search(run.config.read_text(encoding="utf-8", errors="replace"))
    try:
        written = make_config(dict(raw), str(run.config)).to_dict()
    except ConfigError:
        written = None  # a value no run could have: an edit, named below from the raw file
    current = {k: (written[k] if written and k in raw else raw.get(k, _MISSING)) for k in recorded}
    changed = [k for k in recorded if k != _PLACE and current[k] != recorded[k]]
    changed += sorted(str(k) for k in raw if k not in recorded)
    if not changed:
        return
    # Written whole by a start killed before settings.json caught up: its resumable
    # settings are that start's, the rest must be the record's.
    intact = header is not None and written is not None and header[1] == settings_digest(written)
    if intact and set(changed) <= RESUMABLE:
        return
    edited = [k for k in changed if k not in overridden or k not in RESUMABLE]
    if not edited:
        return
    shown = ", ".join(_shown_change(k, recorded.get(k), current.get(k, raw.get(k))) for k in edited)
    if advice is not None:
        raise ConfigError(f"{run.config} was edited after the run started: {shown}. {advice}")
    hint = ""
    if set(edited) <= RESUMABLE:
        hint = f"; {', '.join(edited)} may change on the command line: --resume {run} KEY=VALUE"
    raise ConfigError(
        f"{run.config} was edited after the run started: {shown}. A resumed run keeps its "
        f"settings: undo the edit, or start a new run from the file: vggspec run train "
        f"--config {run.config} out=NEW_FOLDER{hint}"
    )


def checked_record(run: RunDir, advice: str) -> dict:
    """The settings `run` recorded in settings.json (digests checked), refused with
    `advice` when its config.yaml says otherwise: what an evaluation of its net trusts."""
    values, _ = _recorded(run)
    _check_config_file(run, values, set(), advice)
    return values


def resumed(path: str, overrides: list[str], warn: bool = True) -> tuple[TrainConfig, Spec]:
    """The settings and the spec of the run in `path` as it recorded them, with the
    command line's resumable `overrides` (key=value words) on top; anything else given or
    edited is a ConfigError naming it. `warn`: say so when the spec file has changed since
    (one process of several says it)."""
    run = RunDir(path)
    odd = run.not_regular()
    if odd:
        raise ConfigError(
            f"{odd[0]}: not a regular file (a FIFO, a folder, a device…), where the run "
            "writes one: remove it, or resume a copy of the run without it"
        )
    if not run.config.is_file():
        raise ConfigError(f"{path}: not a run folder (no {RunDir.CONFIG})")
    changes = parse_overrides(overrides)
    fixed = sorted(set(changes) - RESUMABLE)
    if fixed:
        raise ConfigError(
            f"a resumed run keeps its settings; only {', '.join(sorted(RESUMABLE))} may "
            f"change (not {', '.join(fixed)})"
        )
    values, text = _recorded(run)
    _check_config_file(run, values, set(changes))
    values = {**values, **changes, _PLACE: str(Path(path))}
    cfg = make_config(values, str(run.settings))
    try:
        spec = parse(text, f"{run.settings} (the spec the run started with)")
    except SpecError as err:
        raise ConfigError(f"{run.settings}: its spec does not parse: {err}") from None
    if warn:
        _warn_if_spec_changed(cfg.spec, text, run)
    return cfg, spec


def _warn_if_spec_changed(path: str, recorded_text: str, run: RunDir) -> None:
    try:
        now = spec_text(load_spec(path))
    except SpecError:
        now = None
    if now != recorded_text:
        what = "is gone or unreadable" if now is None else "has changed"
        print(
            f"vggspec: warning: {path} {what} since the run started; it continues with the "
            f"spec it started with (in {run.settings})",
            file=sys.stderr,
            flush=True,
        )
