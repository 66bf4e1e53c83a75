"""Plain descriptions of a net's kernel launches at real shapes, each with the kernel plans it
costs, for the ahead-of-time report.

The descriptions import neither torch nor triton (`vggspec compile` lists launches without
them); a description's `plans` imports its kernel family's planners when asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# fp32 GEMMs are planned on TF32 tensor cores (torch.backends.*.allow_tf32 = True), the
# only fp32 mode worth reporting against a tensor-core roofline.
GEMM = {"upcast": False, "allow_tf32": True}


class KernelLaunch:
    """What every launch description answers: the kernel plans it costs, the backend call
    it becomes, and whether the kernels can index its shapes."""

    name: str

    def plans(self, dtype: str, training: bool = True) -> list:
        """The kernel launches the layer costs: forward, and for training its gradients."""
        raise NotImplementedError

    def auto_call(self) -> str:
        """The backend call it becomes, as the `auto` backend names what it measures."""
        raise NotImplementedError

    def check(self) -> None:
        """ValueError for a shape the kernels cannot index; most launches have none."""


@dataclass(frozen=True)
class ConvLaunch(KernelLaunch):
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

    def plans(self, dtype: str, training: bool = True) -> list:
        """Forward; for training the data gradient (not for the first layer), the weight
        gradient and, when it splits K, the sums of its partial weight and bias gradients."""
        from .conv import conv_dgrad_plan, conv_fwd_plan, conv_wgrad_plan
        from .splitk import splitk_sum_plan

        plans = [conv_fwd_plan(self, dtype, **GEMM)]
        if training:
            if self.input_grad:
                plans.append(conv_dgrad_plan(self, dtype, **GEMM))
            wgrad = conv_wgrad_plan(self, dtype, **GEMM)
            plans.append(wgrad)
            splits = wgrad.notes["splits"]
            if splits > 1:
                weights = self.c_out * self.c_in * self.kh * self.kw
                plans.append(splitk_sum_plan(weights, splits, dtype))
                plans.append(splitk_sum_plan(self.c_out, splits, dtype))
        return plans

    def check(self) -> None:
        """ValueError past int32 offsets (the kernels index one image in int32)."""
        from .conv import check_index_range

        check_index_range(self)

    def auto_call(self) -> str:
        relu = " relu" if self.relu else ""
        return (
            f"conv {self.batch}x{self.c_in}x{self.h}x{self.w} -> {self.c_out} "
            f"k{self.kh}x{self.kw} p{self.ph}x{self.pw}{relu}"
        )


@dataclass(frozen=True)
class PoolLaunch(KernelLaunch):
    """A 2×2/2 max pool over an (batch, c, h, w) input."""

    name: str
    batch: int
    c: int
    h: int
    w: int

    def plans(self, dtype: str, training: bool = True) -> list:
        from .pool import maxpool_bwd_plan, maxpool_fwd_plan

        plans = [maxpool_fwd_plan(self.batch, self.c, self.h, self.w, dtype)]
        if training:
            plans.append(maxpool_bwd_plan(self.batch, self.c, self.h, self.w, dtype))
        return plans

    def auto_call(self) -> str:
        return f"max_pool {self.batch}x{self.c}x{self.h}x{self.w}"


@dataclass(frozen=True)
class LinearLaunch(KernelLaunch):
    """A fully connected layer y[m, n] = x[m, k] · Wᵀ + b (+ ReLU)."""

    name: str
    m: int
    k: int
    n: int
    relu: bool = True
    input_grad: bool = True

    def plans(self, dtype: str, training: bool = True) -> list:
        """Forward, data gradient (not for the first layer) and weight gradient, each with
        the sum of its split-K partials when it splits K."""
        from .linear import linear_dgrad_plan, linear_fwd_plan, linear_wgrad_plan
        from .splitk import splitk_followers, splitk_sum_plan

        m, k, n = self.m, self.k, self.n
        fwd = linear_fwd_plan(self, dtype, **GEMM)
        plans = [fwd, *splitk_followers(fwd, m * n, dtype, bias_period=n, relu=self.relu)]
        if training:
            if self.input_grad:
                dgrad = linear_dgrad_plan(self, dtype, **GEMM)
                plans += [dgrad, *splitk_followers(dgrad, m * k, dtype)]
            wgrad = linear_wgrad_plan(self, dtype, **GEMM)
            plans += [wgrad, *splitk_followers(wgrad, n * k, dtype)]
            if wgrad.notes["splits"] > 1:
                plans.append(splitk_sum_plan(n, wgrad.notes["splits"], dtype))
        return plans

    def auto_call(self) -> str:
        return f"linear {self.m}x{self.k} -> {self.n}{' relu' if self.relu else ''}"


@dataclass(frozen=True)
class SoftmaxLaunch(KernelLaunch):
    """Soft-max over ``classes``; with ``loss`` it is the training soft-max + cross-entropy."""

    name: str
    batch: int
    classes: int
    loss: bool = True

    def plans(self, dtype: str, training: bool = True) -> list:
        """With `loss`: cross-entropy forward, the batch mean's sum and (training) its
        backward; without: the soft-max alone."""
        from .cross_entropy import cross_entropy_bwd_plan, cross_entropy_fwd_plan
        from .softmax_rows import softmax_fwd_plan
        from .splitk import splitk_sum_plan

        if not self.loss:
            return [softmax_fwd_plan(self.batch, self.classes, 1, dtype)]
        plans = [
            cross_entropy_fwd_plan(self.batch, self.classes, dtype),
            splitk_sum_plan(1, self.batch, "fp32"),
        ]
        if training:
            plans.append(cross_entropy_bwd_plan(self.batch, self.classes, dtype))
        return plans

    def auto_call(self) -> str:
        method = "cross_entropy" if self.loss else "softmax"
        return f"{method} {self.batch}x{self.classes}"


@dataclass(frozen=True)
class SpatialMeanLaunch(KernelLaunch):
    """Average of a dense (batch, c, h, w) class-score map over positions (evaluation)."""

    name: str
    batch: int
    c: int
    h: int
    w: int

    def plans(self, dtype: str, training: bool = True) -> list:
        from .score_mean import spatial_mean_fwd_plan

        return [spatial_mean_fwd_plan(self.batch, self.c, self.h, self.w, dtype)]

    def auto_call(self) -> str:
        return f"spatial_mean {self.batch}x{self.c}x{self.h}x{self.w}"


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
