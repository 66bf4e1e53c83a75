"""Comparison helpers for the kernel tests: relative error, NaN-aware, with printed mismatches."""

from __future__ import annotations

import torch

# Largest relative error seen per check name over the session, printed at the end.
WORST_ERRORS: dict[str, tuple[float, str]] = {}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|a - b| / max|b| over finite entries (absolute error when b is all zero)."""
    a, b = actual.detach().double(), expected.detach().double()
    finite = torch.isfinite(b)
    if not finite.any():
        return 0.0
    diff = (a - b)[finite].abs().max().item()
    scale = b[finite].abs().max().item()
    return diff / scale if scale > 0 else diff


def _mismatch_report(actual, expected, bad, limit=8) -> str:
    idx = bad.nonzero()[:limit]
    lines = [
        f"  at {tuple(i.tolist())}: got {actual[tuple(i)].item()!r}, "
        f"want {expected[tuple(i)].item()!r}"
        for i in idx
    ]
    more = int(bad.sum()) - len(idx)
    if more > 0:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    tol: float,
    what: str,
    where: str = "",
    record: bool = True,
) -> float:
    """Fail unless shapes agree, NaNs sit exactly where the reference has them, and the
    relative error is at most ``tol``. Mismatching elements are listed in the message;
    the worst error per ``what`` is kept for the end-of-run summary when ``record``."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    a = actual.detach().float()
    b = expected.detach().float()
    nan_wrong = torch.isnan(a) != torch.isnan(b)
    if nan_wrong.any():
        raise AssertionError(
            f"{what}: NaN pattern differs from the reference ({int(nan_wrong.sum())} elements)\n"
            + _mismatch_report(a, b, nan_wrong)
        )
    inf_wrong = torch.isinf(a) != torch.isinf(b)
    if inf_wrong.any():
        raise AssertionError(f"{what}: inf pattern differs\n" + _mismatch_report(a, b, inf_wrong))
    err = relative_error(a, b)
    prev = WORST_ERRORS.get(what)
    if record and (prev is None or err > prev[0]):
        WORST_ERRORS[what] = (err, where)
    if err > tol:
        finite = torch.isfinite(b)
        scale = b[finite].abs().max().clamp_min(1e-30)
        bad = finite & ((a - b).abs() / scale > tol)
        raise AssertionError(
            f"{what}: relative error {err:.3e} > {tol:.1e}\n" + _mismatch_report(a, b, bad)
        )
    return err


def randn(shape, rng: torch.Generator, dtype=torch.float32, channels_last=False, scale=1.0):
    t = (torch.randn(shape, generator=rng) * scale).to(dtype)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t
