"""The spec's abstract syntax: frozen dataclasses that remember where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field

# Limits keep a typo ("conv3-6400000") from becoming an out-of-memory crash later.
MAX_CHANNELS = 1 << 20
MAX_KERNEL = 99
MAX_INPUT_SIDE = 1 << 16

COLOUR_CHANNELS = {"RGB": 3, "gray": 1}


# Every node's `loc` is carried along but never compared nor printed: the same network
# written twice with different spacing is the same spec.


@dataclass(frozen=True)
class Loc:
    """A span in the spec text (1-based line and column), for error messages."""

    line: int
    column: int
    end_line: int
    end_column: int


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class Input:
    """The input line: image height, width and colour (RGB = 3 channels, gray = 1)."""

    height: int = 224
    width: int = 224
    colour: str = "RGB"
    loc: Loc | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        _check_range("input height", self.height, 1, MAX_INPUT_SIDE)
        _check_range("input width", self.width, 1, MAX_INPUT_SIDE)
        if self.colour not in COLOUR_CHANNELS:
            raise ValueError(f"input colour must be one of {sorted(COLOUR_CHANNELS)}")

    @property
    def channels(self) -> int:
        return COLOUR_CHANNELS[self.colour]


@dataclass(frozen=True)
class Conv:
    """`conv<k>-<c>`: k×k convolution, stride 1, same padding, c channels, then ReLU."""

    kernel: int
    channels: int
    loc: Loc | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        _check_range("conv kernel size", self.kernel, 1, MAX_KERNEL)
        if self.kernel % 2 == 0:
            raise ValueError(f"conv kernel size must be odd, got {self.kernel}")
        _check_range("conv channels", self.channels, 1, MAX_CHANNELS)


@dataclass(frozen=True)
class MaxPool:
    """`maxpool`: 2×2 max pooling, stride 2."""

    loc: Loc | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Lrn:
    """`LRN`: AlexNet local response normalisation (size 5, alpha 1e-4, beta 0.75, k 2)."""

    loc: Loc | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class FullyConnected:
    """`FC-<n>`: fully connected layer with n outputs (ReLU after all but the last)."""

    features: int
    loc: Loc | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        _check_range("FC size", self.features, 1, MAX_CHANNELS)


@dataclass(frozen=True)
class SoftMax:
    """`soft-max`: ends the net."""

    loc: Loc | None = field(default=None, compare=False, repr=False)


Layer = Conv | MaxPool | Lrn | FullyConnected | SoftMax


@dataclass(frozen=True)
class Spec:
    """A whole network: its description (the leading comment block), input and layers."""

    layers: tuple[Layer, ...]
    input: Input = field(default_factory=Input)
    description: tuple[str, ...] = ()
    # The text and file it was parsed from, so that errors found later by a pass
    # can still quote the line; like locations, never compared.
    source: str | None = field(default=None, compare=False, repr=False)
    filename: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        body = [layer for layer in self.layers if not isinstance(layer, SoftMax)]
        if not body:
            raise ValueError("a spec needs at least one layer besides soft-max")
        for i, layer in enumerate(self.layers):
            if isinstance(layer, SoftMax) and i != len(self.layers) - 1:
                raise ValueError("soft-max may only end the net")
        for line in self.description:
            if line != line.strip() or "\n" in line:
                raise ValueError(f"description lines are single stripped lines: {line!r}")
