"""The kernel test shapes, shared by tests/kernels/ and bench/gpu_sweep.py (no torch, no pytest)."""

from __future__ import annotations

from typing import NamedTuple


class ConvCase(NamedTuple):
    batch: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    ph: int
    pw: int
    relu: bool
    channels_last: bool

    def __str__(self):
        return (
            f"n{self.batch}c{self.c_in}_{self.h}x{self.w}_to{self.c_out}_k{self.kh}x{self.kw}"
            f"_p{self.ph}{self.pw}{'_relu' if self.relu else ''}"
            f"{'_cl' if self.channels_last else ''}"
        )


CONV_CASES = [
    ConvCase(2, 5, 7, 9, 19, 3, 3, 1, 1, True, False),  # odd H≠W, "same" 3×3
    ConvCase(1, 3, 9, 7, 17, 5, 5, 2, 2, True, True),  # RGB input, 5×5
    ConvCase(3, 20, 5, 6, 18, 1, 1, 0, 0, True, False),  # 1×1, batch 3
    ConvCase(2, 3, 7, 7, 21, 7, 7, 0, 0, True, False),  # densified first FC: valid 7×7
    ConvCase(1, 3, 9, 7, 13, 7, 5, 0, 0, False, True),  # valid 7×5, no ReLU, 3×3 output
    ConvCase(2, 33, 5, 3, 35, 3, 3, 1, 1, True, True),  # C_in over one 32-wide K block
    ConvCase(1, 17, 4, 6, 9, 3, 1, 1, 0, True, False),  # non-square 3×1 kernel
    ConvCase(1, 4, 3, 5, 6, 1, 1, 1, 2, True, False),  # padding beyond k//2
]

LINEAR_SHAPES = [(3, 37, 21), (2, 150, 70), (1, 5, 3), (3, 200, 17)]  # (batch, in, out)
POOL_SHAPES = [(2, 5, 7, 9), (1, 3, 6, 4), (3, 17, 5, 5), (1, 1, 2, 2), (2, 16, 9, 3)]
SOFTMAX_SHAPES = [(3, 1000), (2, 77), (1, 5)]  # (rows, classes)
MEAN_SHAPES = [(2, 70, 6, 5), (1, 9, 7, 1), (3, 5, 1, 1)]  # (batch, classes, h, w)
