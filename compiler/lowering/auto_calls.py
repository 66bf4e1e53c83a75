"""What the auto backend would measure for a graph: its distinct calls, from the launches."""

from __future__ import annotations

from collections import Counter


def auto_calls(launches) -> list[str]:
    """The distinct calls, in network order, that `auto` times on first use on a GPU."""
    return list(dict.fromkeys(launch.auto_call() for launch in launches))


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
