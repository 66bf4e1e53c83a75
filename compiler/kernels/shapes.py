"""Plain descriptions of a net's kernel launches at real shapes, for the ahead-of-time report."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ConvLaunch:
    """A stride-1 conv + bias (+ ReLU) layer; ``input_grad`` False for the first layer."""

    name: str
    batch: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    ph: int
    pw: int
    relu: bool = True
    input_grad: bool = True


@dataclass(frozen=True)
class PoolLaunch:
    """A 2×2/2 max pool over an (batch, c, h, w) input."""

    name: str
    batch: int
    c: int
    h: int
    w: int


@dataclass(frozen=True)
class LinearLaunch:
    """A fully connected layer y[m, n] = x[m, k] · Wᵀ + b (+ ReLU)."""

    name: str
    m: int
    k: int
    n: int
    relu: bool = True
    input_grad: bool = True


@dataclass(frozen=True)
class SoftmaxLaunch:
    """Soft-max over ``classes``; with ``loss`` it is the training soft-max + cross-entropy."""

    name: str
    batch: int
    classes: int
    loss: bool = True


@dataclass(frozen=True)
class SpatialMeanLaunch:
    """Average of a dense (batch, c, h, w) class-score map over positions (evaluation)."""

    name: str
    batch: int
    c: int
    h: int
    w: int


Launch = ConvLaunch | PoolLaunch | LinearLaunch | SoftmaxLaunch | SpatialMeanLaunch
LAUNCH_TYPES = {cls.__name__: cls for cls in Launch.__args__}


def launch_to_json(launch: Launch) -> dict:
    return {"type": type(launch).__name__, **asdict(launch)}


def launch_from_json(data: dict) -> Launch:
    fields = dict(data)
    return LAUNCH_TYPES[fields.pop("type")](**fields)


# Table 1, configuration D: (stage channels, convs per stage).
_VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16_conv_launches(batch: int = 256, size: int = 224) -> list[ConvLaunch]:
    """The 13 conv3 layers of VGG-16 (configuration D), named as the released models."""
    launches, c_in, side = [], 3, size
    for stage, (channels, convs) in enumerate(_VGG16_STAGES, start=1):
        for i in range(1, convs + 1):
            launches.append(
                ConvLaunch(
                    f"conv{stage}_{i}",
                    batch,
                    c_in,
                    side,
                    side,
                    channels,
                    3,
                    3,
                    1,
                    1,
                    input_grad=c_in != 3,
                )
            )
            c_in = channels
        side //= 2
    return launches


def vgg16_launches(batch: int = 256, size: int = 224, classes: int = 1000) -> list[Launch]:
    """Every training launch of VGG-16 (configuration D): convs, pools, FCs, loss."""
    convs = vgg16_conv_launches(batch, size)
    launches: list[Launch] = []
    side = size
    for stage in range(1, 6):
        launches += [c for c in convs if c.name.startswith(f"conv{stage}_")]
        channels = launches[-1].c_out
        launches.append(PoolLaunch(f"pool{stage}", batch, channels, side, side))
        side //= 2
    launches += [
        LinearLaunch("fc6", batch, 512 * side * side, 4096),
        LinearLaunch("fc7", batch, 4096, 4096),
        LinearLaunch("fc8", batch, 4096, classes, relu=False),
        SoftmaxLaunch("prob", batch, classes),
    ]
    return launches
