"""Fuzzing the run settings: whatever a recipe or a key=value word holds, the result is a valid
TrainConfig or one short ConfigError line, and `vggspec run train` exits 2 writing nothing."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import yaml
from helpers import vggspec_cmd
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from vggspec.runtime.train.config import (
    ConfigError,
    TrainConfig,
    load_config,
    make_config,
    parse_overrides,
    validate,
)

KNOWN = [f.name for f in dataclasses.fields(TrainConfig)]
MESSAGE_LIMIT = 400  # characters: one line a person reads, whatever the value was

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(2**62, 2**70) | st.integers(-(2**70), -(2**62)),  # past 64 bits
    st.floats(),  # nan, ±inf, subnormals, -0.0
    st.text(max_size=20),
    st.sampled_from(["256", "1e-3", "5e-4", "1e999", "nan", "fp32", "cuda", "[256,512]", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)
keys = st.one_of(
    st.sampled_from(KNOWN),
    st.text(max_size=12),
    st.integers(),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
)
# Mostly known keys (so values reach the type and range checks), some unknown ones.
recipes = st.dictionaries(keys, values, max_size=6)
known_recipes = st.dictionaries(st.sampled_from(KNOWN), values, max_size=6)


def _check(make) -> None:
    try:
        cfg = make()
    except ConfigError as err:
        message = str(err)
        assert message and "\n" not in message and len(message) < MESSAGE_LIMIT, message[:500]
        return
    assert isinstance(cfg, TrainConfig)
    validate(cfg)  # a config that came out holds again
    yaml.safe_dump(cfg.to_dict())  # and can be written to the run folder


@settings(max_examples=200, deadline=None)
@given(recipes | known_recipes)
@example({"lr": 10**400})  # once an OverflowError
@example({1: 2, "x": 3})  # once a TypeError (sorting mixed keys)
@example({None: 1})  # once a TypeError (difflib on a non-string)
@example({"seed": 2**64})  # torch.manual_seed takes 64 bits
@example(  # once a 400-character message: reprlib bounds each level, not the whole
    {
        "checkpoint_every": {
            "0\x08\U00018d09": -140599593686246014976,
            "\x94\xd4E\xfd": {"\U000723a0\U00095629\xcb\U000fb964": None, "\x13\U0004d1e5#!": None},
            "l\x82\x80\x117\xdc": None,
            "": [10000019208559955968, -1000000000000000000000],
            "00\x1f\U000101fe\U00012544\U00018cd6": {"": None, "0\x1f": -(10**18)},
            "000\U00018d09": {"\U00018cd6\U0002ebe1": None},
        }
    }
)
@example({"lr_schedule": "one-cycle", "lr_warmup": -0.0})
def test_any_mapping_is_a_config_or_one_config_error(recipe):
    _check(lambda: make_config(dict(recipe)))


def _dump(recipe: dict) -> str:
    return yaml.safe_dump(recipe, allow_unicode=True)


@settings(max_examples=100, deadline=None)
@given(st.one_of(recipes.map(_dump), known_recipes.map(_dump), st.text(max_size=200)))
@example("[" * 5000)  # once a RecursionError in PyYAML
@example("a: " + "{b: " * 3000 + "1" + "}" * 3000)
@example(
    "a: &a [1,1,1,1,1,1,1,1,1]\n"
    + "".join(
        f"{c}: &{c} [{f'*{p},' * 8}*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "scale: *i\n"
)
@example("!!python/object/apply:os.system ['true']\n")
@example("lr: !!binary aGVsbG8=\n")
@example("? [1, 2]\n: 3\n")
@example("lr: 0.1\nepochs: 2\nlr: 0.002\n")  # a key twice: refused, not the last one taken
@example("a: {b: 1, b: 2}\n")
@example("\x1f")  # once a two-line message (PyYAML's ReaderError)
def test_any_recipe_file_is_a_config_or_one_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("recipe") / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check(lambda: load_config(path, []))


words = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KNOWN), st.text(max_size=15)),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KNOWN), scalars.map(str)),
    st.text(max_size=15),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(words, max_size=5))
@example(["lr=" + "[" * 5000])
@example(["seed=" + "9" * 30])
@example(["scale=[1, 2, 3]", "batch_size=-1"])
def test_any_key_value_words_are_a_config_or_one_config_error(items):
    _check(lambda: load_config(None, items))
    with contextlib.suppress(ConfigError):
        parse_overrides(items)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(st.lists(words, min_size=1, max_size=4))
def test_run_train_with_bad_words_exits_2_and_writes_nothing(cli, tmp_path, items):
    # A word starting with "-" is an option to argparse, not a setting ("--" ends the
    # options and is dropped, "-h" prints the help): this test is about setting words.
    assume(not any(w.startswith("-") for w in items))
    run = tmp_path / "run"
    items = [*items, f"out={run}"]
    try:
        load_config(None, items)
        assume(False)  # settings that hold would start a run: not this test's business
    except ConfigError:
        pass
    code, out, err = cli("run", "train", *items)
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not run.exists()


@pytest.mark.parametrize(
    "word",
    ["lr=" + "9" * 400, "epochs=[[[[[[", "scale=" + "[" * 3000, "batch_size={a: [1, {b: 2}]}"],
    ids=["huge", "unclosed", "deep", "nested"],
)
def test_run_train_with_extreme_words_exits_2_and_writes_nothing(cli, tmp_path, word):
    run = tmp_path / "run"
    code, _, err = cli("run", "train", word, f"out={run}")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not run.exists()


def test_a_separate_process_exits_2_without_a_traceback(tmp_path):
    run = tmp_path / "run"
    result = vggspec_cmd("run", "train", "scale=" + "[" * 3000, f"out={run}", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not run.exists()
