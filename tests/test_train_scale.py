"""The training scale is read once, when the config loads: a TrainScale in the config, written
back in its record as the config gave it, refused in the same words as before."""

from __future__ import annotations

import pytest
from vggspec.runtime.data.scale import TrainScale
from vggspec.runtime.train.config import ConfigError, load_config, make_config


@pytest.mark.parametrize(
    "word, scale, recorded",
    [
        (None, TrainScale(256, 256), 256),  # the paper's default
        ("scale=384", TrainScale(384, 384), 384),
        ("scale=[256,512]", TrainScale(256, 512), [256, 512]),
        ("scale=[256,256]", TrainScale(256, 256), [256, 256]),  # recorded as written
    ],
)
def test_the_config_holds_a_train_scale_and_records_it_as_given(word, scale, recorded):
    cfg = load_config(None, [word] if word else [])
    assert isinstance(cfg.scale, TrainScale) and cfg.scale == scale
    values = cfg.to_dict()
    assert values["scale"] == recorded and type(values["scale"]) is type(recorded)
    again = make_config(values)  # a resumed run reads its record back
    assert again.scale == scale and again.to_dict() == values


@pytest.mark.parametrize(
    "word, message",
    [
        ("scale=[300,200]", "scale must be S or [S_min, S_max] with S_min ≤ S_max, got [300, 200]"),
        ("scale=[1,2,3]", "scale must be S or [S_min, S_max] with S_min ≤ S_max, got [1, 2, 3]"),
        ("scale=0", "scale must be positive, got 0"),
        ("scale=[0,10]", "scale must be positive, got [0, 10]"),
        ("scale=big", "scale must be int or list[int], got 'big'"),
        ("scale=2.5", "scale must be int or list[int], got 2.5"),
    ],
)
def test_a_bad_scale_is_refused_in_one_line(word, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [word])
    assert str(err.value) == message


def test_a_config_built_with_a_train_scale_validates_the_same():
    cfg = load_config(None, ["scale=[256,512]"])
    cfg.epochs = 3
    assert make_config(cfg.to_dict()).scale == TrainScale(256, 512)
