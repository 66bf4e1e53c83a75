"""Run configs: YAML (safe_load only) + key=value overrides → a validated TrainConfig."""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from dataclasses import dataclass, fields
from pathlib import Path

import yaml
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.frontend.source import TooLarge, read_at_most

from ..data.scale import TrainScale


class ConfigError(VggspecError):
    """A run setting that is unknown, of the wrong type or out of range."""


PAPER_SCALE = TrainScale(256, 256)  # S = 256, the paper's first fixed scale


@dataclass
class TrainConfig:
    """Every setting of `vggspec run train`; defaults are the paper's recipe (Sect. 3.1)."""

    spec: str = "specs/demo.vgg"  # the network, a .vgg file
    data: str | None = None  # ImageFolder root with train/ and val/; none: built-in demo data
    out: str | None = None  # run folder; none: runs/<spec>-<date>-<time>
    seed: int = 0  # all randomness (init, sampling, augmentation, dropout) derives from it
    epochs: int = 74  # the paper stopped after 370K iterations = 74 epochs
    max_steps: int | None = None  # stop after this many SGD steps (for short runs)
    batch_size: int = 256  # global: split across processes
    lr: float = 0.01  # initial learning rate
    lr_factor: float = 0.1  # divide by 10 ...
    lr_patience: int = 1  # ... once more than this many epochs bring no better val top-1
    lr_drops: int = 3  # ... at most this many times
    lr_schedule: str = "plateau"  # the paper's (the three above), or one-cycle (per step)
    lr_warmup: float = 0.2  # one-cycle: fraction of the steps spent rising from 0 to lr
    momentum: float = 0.9
    weight_decay: float = 5e-4  # L2 penalty multiplier
    dropout: float = 0.5  # on the first two FC layers
    scale: TrainScale = PAPER_SCALE  # training scale S, or [S_min, S_max] for scale jittering
    # gaussian (N(0, 0.01²)), glorot, or a trained net to copy from: a net A's first four
    # conv and last three FC layers (Sect. 3.1); for a box head, every layer of a
    # classification net but the last (Appendix A). A run folder or a model.safetensors.
    init: str = "gaussian"
    finetune: str | None = None  # start from all weights of this model (e.g. S=384 from S=256)
    # Which layers train: all, or fc (the first two FC layers and the last one; the conv
    # layers stay as initialised: Appendix A's "fine-tuning only the first two FC layers",
    # the last FC layer being new).
    finetune_layers: str = "all"
    # Box annotations of a localisation net (a spec ending in `box`): null reads VOC XML
    # from DATA/annotations/<split>/; else a folder of VOC XML or a .json/.csv table, where
    # "{split}" in the path stands for train or val.
    boxes: str | None = None
    backend: str = "auto"  # auto (measured per layer on CUDA, else torch), torch or triton
    # fp32, bf16 (autocast), or fp64 (every tensor: slow, for checking that the processes
    # compute what one process does)
    precision: str = "fp32"
    # NHWC activations and conv weights; null: on where it measured faster (bf16, and on
    # CUDA), off for fp32 on the CPU. The log says which.
    channels_last: bool | None = None
    device: str = "auto"  # auto, cpu or cuda
    workers: int = 2  # data-loading processes per training process
    checkpoint_every: int = 500  # steps between checkpoints (and one at each epoch end)
    log_every: int = 10  # steps between log lines
    max_bad_files: float = 0.01  # fraction of unreadable images above which the run stops
    colour_shift: float = 0.1  # std of AlexNet's PCA colour shift (0 switches it off)
    normalise: str = "mean"  # subtract the mean RGB (the paper); mean-std also divides by std

    def uses_channels_last(self, device) -> bool:
        """`channels_last` as set, or (null) on for bf16 and on CUDA, where NHWC measured
        faster (bench/train.py), off for fp32 on the CPU."""
        if self.channels_last is not None:
            return self.channels_last
        return self.precision == "bf16" or getattr(device, "type", str(device)) == "cuda"

    def to_dict(self) -> dict:
        """The settings as a config writes them (the scale as it was given)."""
        return {**dataclasses.asdict(self), "scale": self.scale.as_given}


_FIELDS = {f.name: f for f in fields(TrainConfig)}

_CHOICES = {
    "backend": ("auto", "torch", "triton"),
    "precision": ("fp32", "bf16", "fp64"),
    "device": ("auto", "cpu", "cuda"),
    "normalise": ("mean", "mean-std"),
    "lr_schedule": ("plateau", "one-cycle"),
    "finetune_layers": ("all", "fc"),
}
_POSITIVE = ("epochs", "batch_size", "lr", "checkpoint_every", "log_every")
_NON_NEGATIVE = (
    "seed",
    "weight_decay",
    "workers",
    "lr_drops",
    "lr_patience",
    "colour_shift",
)
_FRACTIONS = ("dropout", "max_bad_files", "lr_warmup", "momentum")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# torch and numpy take seeds and counts as 64-bit integers; Python's ints do not stop there.
_INT_LIMIT = 2**63 - 1

# A value shown in a message is cut short: a YAML alias bomb ("billion laughs", ten levels
# of nine aliases) is a few hundred bytes of text but a repr of a gigabyte.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxlong = 3, 6, 6, 60, 40
_SHORT.maxother = 60


_SHOWN_LIMIT = 200  # reprlib bounds each level, not the total: nested dicts still ran to 400


def shown(value) -> str:
    """repr(value), at most a line long."""
    text = _SHORT.repr(value)
    return text if len(text) <= _SHOWN_LIMIT else text[: _SHOWN_LIMIT - 3] + "..."


def _typed(name: str, value, annotation: str):
    """value, checked (and ints widened to float) against the field's annotation."""
    allowed = [a.strip() for a in annotation.split("|")]
    if value is None:
        if "None" in allowed:
            return None
        raise ConfigError(f"{name} needs a value")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _INT_LIMIT:
        raise ConfigError(f"{name} is out of range, got {shown(value)}")
    if isinstance(value, list) and any(
        isinstance(x, int) and not isinstance(x, bool) and abs(x) > _INT_LIMIT for x in value
    ):
        raise ConfigError(f"{name} is out of range, got {shown(value)}")
    if "float" in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if "float" in allowed and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 and 5e-4 (no dot) as strings
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, float) and math.isfinite(v),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "list[int]": lambda v: (
            isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        ),
    }
    if not any(checks[a](value) for a in allowed if a in checks):
        wanted = " or ".join(a for a in allowed if a != "None")
        raise ConfigError(f"{name} must be {wanted}, got {shown(value)}")
    return value


# What a config file may write for a field whose type is read from it.
_WRITTEN = {"TrainScale": "int | list[int]"}


def validate(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its values checked, as written in a config, and read (the scale)."""
    if isinstance(cfg.scale, TrainScale):  # read already: checked as the config wrote it
        cfg.scale = cfg.scale.as_given
    for f in fields(cfg):
        annotation = _WRITTEN.get(str(f.type), str(f.type))
        setattr(cfg, f.name, _typed(f.name, getattr(cfg, f.name), annotation))
    for name, options in _CHOICES.items():
        if getattr(cfg, name) not in options:
            raise ConfigError(
                f"{name} must be one of {', '.join(options)}, got {shown(getattr(cfg, name))}"
            )
    for name in _POSITIVE:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(cfg, name)}")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be ≥ 0, got {getattr(cfg, name)}")
    for name in _FRACTIONS:
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.max_steps is not None and cfg.max_steps <= 0:
        raise ConfigError(f"max_steps must be > 0, got {cfg.max_steps}")
    if not 0 < cfg.lr_factor < 1:
        raise ConfigError(f"lr_factor must be in (0, 1), got {cfg.lr_factor}")
    if isinstance(cfg.scale, list) and (len(cfg.scale) != 2 or cfg.scale[0] > cfg.scale[1]):
        raise ConfigError(
            f"scale must be S or [S_min, S_max] with S_min ≤ S_max, got {shown(cfg.scale)}"
        )
    try:
        cfg.scale = TrainScale.parse(cfg.scale)
    except ValueError:
        raise ConfigError(f"scale must be positive, got {shown(cfg.scale)}") from None
    return cfg


def parse_overrides(items: list[str]) -> dict:
    """`key=value` words; values are read as YAML scalars/lists (`scale=[256,512]`)."""
    result = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {shown(item)}")
        name = key.strip()
        if not text.strip() and name in _FIELDS:
            # An unset shell variable (data=$DATA) must not fall back to a default.
            null = f", or {name}=null for none" if "None" in str(_FIELDS[name].type) else ""
            raise ConfigError(f"{name}= has no value: give {name}=VALUE{null}")
        try:
            result[key.strip()] = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError):  # PyYAML recurses once per nesting level
            raise ConfigError(f"cannot read the value of {shown(key)}: {shown(text)}") from None
    return result


# A recipe is a page of text; a config file larger than this is the wrong file.
MAX_CONFIG_BYTES = 1 << 20


class _UniqueKeys(yaml.SafeLoader):
    """safe_load's reading, with a key given twice in one mapping an error: the last one
    won without a word (`lr: 0.1` … `lr: 0.002` trained at 0.002)."""


def _mapping_once(loader: _UniqueKeys, node, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            again = key in seen
        except TypeError:  # an unhashable key: construct_mapping says so
            break
        if again:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_once)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file")
        # At most the limit, whatever the file says its size is (/dev/zero, a pipe).
        data = yaml.load(read_at_most(path, MAX_CONFIG_BYTES).decode("utf-8"), _UniqueKeys)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except TooLarge:
        raise ConfigError(f"{path}: more than 1 MiB, too large to be a run config") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # one line
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
    except RecursionError:  # PyYAML recurses once per nesting level
        raise ConfigError(f"{path}: nested too deeply to be a run config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config is a mapping of key: value")
    return data


def check_known(values: dict, source: str) -> None:
    """Refuse the keys of `values` that are no setting, naming `source` and close ones."""
    known = set(_FIELDS)
    unknown = sorted(set(values) - known, key=repr)  # YAML keys may be numbers, null, ...
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = (
                difflib.get_close_matches(key, sorted(known), n=1) if isinstance(key, str) else []
            )
            hints.append(shown(key) + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown setting in {source}: {', '.join(hints)}")


def make_config(values: dict, source: str = "the config") -> TrainConfig:
    check_known(values, source)
    return validate(TrainConfig(**values))


def load_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """The recipe at `path` (or the defaults) with the command line's key=value on top."""
    given = parse_overrides(overrides)
    check_known(given, "the command line")
    values = read_yaml(path) if path else {}
    check_known(values, str(path))
    cfg = make_config({**values, **given}, str(path))
    # finetune= loads every weight over what init= made: both would record a start that
    # did not happen. Given in one place (both here, or both in the recipe) they are refused;
    # finetune= here overrides the recipe's init (specs/demo.yaml says init: glorot), which
    # goes back to its default, no request.
    default = _FIELDS["init"].default
    if cfg.finetune is not None:
        if "init" in given or ("finetune" not in given and cfg.init != default):
            raise ConfigError(
                f"init={cfg.init} and finetune={cfg.finetune}: finetune= starts from all the "
                "weights of its net, so init= would not take effect; give one"
            )
        cfg.init = default
    return cfg
