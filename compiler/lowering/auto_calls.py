"""What the auto backend would measure for a graph: its distinct calls, from the launches."""

from __future__ import annotations

from collections import Counter


def _call(launch) -> str:
    """The call (backend method and shapes) a launch becomes; layers of one shape share it."""
    kind = type(launch).__name__
    if kind == "ConvLaunch":
        relu = " relu" if launch.relu else ""
        return (
            f"conv {launch.batch}x{launch.c_in}x{launch.h}x{launch.w} -> {launch.c_out} "
            f"k{launch.kh}x{launch.kw} p{launch.ph}x{launch.pw}{relu}"
        )
    if kind == "LinearLaunch":
        return f"linear {launch.m}x{launch.k} -> {launch.n}{' relu' if launch.relu else ''}"
    if kind == "PoolLaunch":
        return f"max_pool {launch.batch}x{launch.c}x{launch.h}x{launch.w}"
    if kind == "SpatialMeanLaunch":
        return f"spatial_mean {launch.batch}x{launch.c}x{launch.h}x{launch.w}"
    if kind == "SoftmaxLaunch":
        method = "cross_entropy" if launch.loss else "softmax"
        return f"{method} {launch.batch}x{launch.classes}"
    raise TypeError(f"unknown launch {launch!r}")


def auto_calls(launches) -> list[str]:
    """The distinct calls, in network order, that `auto` times on first use on a GPU."""
    return list(dict.fromkeys(_call(launch) for launch in launches))


def describe_auto_calls(launches, training: bool) -> str:
    """One line for the compile report: how many calls `auto` measures, by kind."""
    calls = auto_calls(launches)
    kinds = Counter(call.split()[0] for call in calls)
    each = ", ".join(f"{kind} {count}" for kind, count in kinds.items())
    what = "forward and backward" if training else "forward"
    return (
        f"backend auto measures {len(calls)} distinct calls on first use ({each}): "
        f"Triton against torch, {what}, the faster kept per GPU\n"
    )
