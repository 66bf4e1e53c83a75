"""Tile-config sets for every kernel and the pure helpers that pick one per layer shape."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..targets import DEFAULT_NUM_SMS, ELEMENT_BYTES
from .plan import cdiv


@dataclass(frozen=True)
class ConvConfig:
    """Implicit-GEMM tile for conv forward and data-gradient kernels.

    ``flat_k`` walks the K = kh·kw·C_in axis as one flat index (div/mod per element),
    which wastes no MMA work when C_in is tiny (the RGB input layer); otherwise K is
    walked tap by tap in contiguous channel blocks, which vectorises the loads.
    """

    name: str
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    flat_k: bool = False


@dataclass(frozen=True)
class WgradConfig:
    """Conv weight-gradient tile: rows of (tap, C_in) × C_out, reducing over M = N·H·W.

    ``split_k`` cuts the M reduction into that many slices written as fp32 partials and
    summed in a fixed order afterwards; ``None`` lets ``select_wgrad_config`` choose.
    """

    name: str
    block_r: int
    block_co: int
    block_m: int
    num_warps: int
    num_stages: int
    flat_k: bool = False
    split_k: int | None = None


@dataclass(frozen=True)
class MatmulConfig:
    """Dense GEMM tile for the FC layers (forward, data and weight gradients)."""

    name: str
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    group_m: int = 8
    split_k: int | None = None


@dataclass(frozen=True)
class BlockConfig:
    """One-dimensional block for memory-bound kernels (pool, split-K sum, spatial mean)."""

    name: str
    block: int
    num_warps: int


@dataclass(frozen=True)
class RowConfig:
    """Row-wise reduction tile (soft-max): ``block`` columns per step, looping if wider."""

    name: str
    block: int
    num_warps: int


@dataclass(frozen=True)
class MeanConfig:
    """Spatial mean tile: ``block_c`` channels by ``block_hw`` positions per step."""

    name: str
    block_c: int
    block_hw: int
    num_warps: int


CONV_CONFIGS: tuple[ConvConfig, ...] = (
    ConvConfig("conv_128x128x64_w8_s3", 128, 128, 64, 8, 3),
    ConvConfig("conv_128x128x32_w8_s4", 128, 128, 32, 8, 4),
    ConvConfig("conv_128x64x32_w4_s4", 128, 64, 32, 4, 4),
    ConvConfig("conv_64x64x32_w4_s3", 64, 64, 32, 4, 3),
    ConvConfig("conv_flat_128x64x32_w8_s3", 128, 64, 32, 8, 3, flat_k=True),
)

WGRAD_CONFIGS: tuple[WgradConfig, ...] = (
    WgradConfig("wgrad_128x128x64_w8_s3", 128, 128, 64, 8, 3),
    WgradConfig("wgrad_128x128x32_w8_s4", 128, 128, 32, 8, 4),
    WgradConfig("wgrad_64x64x64_w4_s3", 64, 64, 64, 4, 3),
    WgradConfig("wgrad_64x64x32_w4_s4", 64, 64, 32, 4, 4),
    WgradConfig("wgrad_flat_32x64x64_w8_s3", 32, 64, 64, 8, 3, flat_k=True),
)

MATMUL_CONFIGS: tuple[MatmulConfig, ...] = (
    MatmulConfig("mm_128x128x64_w8_s3", 128, 128, 64, 8, 3),
    MatmulConfig("mm_128x128x32_w8_s4", 128, 128, 32, 8, 4),
    MatmulConfig("mm_64x64x64_w4_s3", 64, 64, 64, 4, 3),
    MatmulConfig("mm_64x64x32_w4_s4", 64, 64, 32, 4, 4),
)

POOL_CONFIGS: tuple[BlockConfig, ...] = (
    BlockConfig("pool_1024_w4", 1024, 4),
    BlockConfig("pool_128_w2", 128, 2),
)

REDUCE_CONFIGS: tuple[BlockConfig, ...] = (
    BlockConfig("sum_1024_w4", 1024, 4),
    BlockConfig("sum_128_w2", 128, 2),
)

SOFTMAX_CONFIGS: tuple[RowConfig, ...] = (
    RowConfig("rows_1024_w4", 1024, 4),
    RowConfig("rows_64_w2", 64, 2),
)

MEAN_CONFIGS: tuple[MeanConfig, ...] = (
    MeanConfig("mean_64x32_w4", 64, 32, 4),
    MeanConfig("mean_16x8_w2", 16, 8, 2),
)


def use_flat_k(c_in: int) -> bool:
    """Flat K pays off when a tap holds fewer channels than the smallest K block (16)."""
    return c_in < 16


def _wide_k(dtype: str) -> bool:
    """The 128×128 tiles walk K 64 at a time for 2-byte operands only. Compiled with fp32
    operands (TF32) they need 192-256 KB of shared memory (sm_90: conv fwd 192, dgrad 224,
    wgrad 256, linear wgrad 228 KB) against 227 KB on an H100 and 163 KB on an A100; the
    K-32 tiles fit both. tests/kernels/test_kernels_fit.py compiles every tile the
    selection can return and checks it against each GPU's limits."""
    return ELEMENT_BYTES[dtype] == 2


def _by_name(configs, name):
    return next(c for c in configs if c.name == name)


def select_conv_config(m: int, n: int, c_in: int, dtype: str, gated: bool = False) -> ConvConfig:
    """Tile for an implicit GEMM with M = N·H·W rows, n output channels, c_in per tap.

    ``gated`` kernels (the data gradient, which also streams the saved ReLU output) get
    the K-32 tile: with K-64 ptxas on sm_80 caps them at 128 registers and spills.
    """
    if use_flat_k(c_in):
        return _by_name(CONV_CONFIGS, "conv_flat_128x64x32_w8_s3")
    if (m <= 64 * 64 or n <= 32) and not gated:
        return _by_name(CONV_CONFIGS, "conv_64x64x32_w4_s3")
    if m <= 64 * 64 or n <= 32:  # gated at 64x64 spills a few bytes on sm_80: 8 warps
        return _by_name(CONV_CONFIGS, "conv_flat_128x64x32_w8_s3")
    if n <= 64:
        return _by_name(CONV_CONFIGS, "conv_128x64x32_w4_s4")
    big = _by_name(CONV_CONFIGS, "conv_128x128x64_w8_s3")
    if not gated and _wide_k(dtype):
        return big
    return _by_name(CONV_CONFIGS, "conv_128x128x32_w8_s4")


def _small_tile(configs, prefix: str, dtype: str):
    """The 64×64, 4-warp tile. fp32 operands (TF32) take K-32 with one more stage: with
    K-64, ptxas for sm_80 spills 120-140 bytes in the fp32 weight gradients (255
    registers); K-32 needs ~165 and spills nothing. 2-byte dtypes keep K-64."""
    name = "64x64x32_w4_s4" if ELEMENT_BYTES[dtype] == 4 else "64x64x64_w4_s3"
    return _by_name(configs, f"{prefix}_{name}")


def split_count(output_tiles: int, reduction_steps: int, num_sms: int, min_steps: int = 4) -> int:
    """Slices of a reduction so that about two waves of programs fill the GPU.

    Each slice keeps at least ``min_steps`` K steps so the pipeline has work to overlap.
    """
    if output_tiles >= 2 * num_sms:
        return 1
    want = cdiv(2 * num_sms, output_tiles)
    return max(1, min(want, reduction_steps // min_steps))


def select_wgrad_config(
    rows: int, c_in: int, c_out: int, m: int, dtype: str, num_sms: int = DEFAULT_NUM_SMS
) -> WgradConfig:
    """Tile and split for the weight gradient: rows = kh·kw·C_in, reduction over m."""
    if use_flat_k(c_in):
        cfg = _by_name(WGRAD_CONFIGS, "wgrad_flat_32x64x64_w8_s3")
    elif c_out <= 64 or rows <= 64:
        cfg = _small_tile(WGRAD_CONFIGS, "wgrad", dtype)
    else:
        cfg = _by_name(WGRAD_CONFIGS, "wgrad_128x128x64_w8_s3")
        if not _wide_k(dtype):
            cfg = _by_name(WGRAD_CONFIGS, "wgrad_128x128x32_w8_s4")
    taps = rows // c_in
    row_tiles = cdiv(rows, cfg.block_r) if cfg.flat_k else taps * cdiv(c_in, cfg.block_r)
    tiles = row_tiles * cdiv(c_out, cfg.block_co)
    return replace(cfg, split_k=split_count(tiles, cdiv(m, cfg.block_m), num_sms))


def select_matmul_config(
    m: int, n: int, k: int, dtype: str, gated: bool = False, num_sms: int = DEFAULT_NUM_SMS
) -> MatmulConfig:
    """Tile and split-K for C[m, n] = A[m, k] · B[k, n] (``gated`` as for convolutions)."""
    if m <= 64 or n <= 64:
        cfg = _small_tile(MATMUL_CONFIGS, "mm", dtype)
    else:
        cfg = _by_name(MATMUL_CONFIGS, "mm_128x128x64_w8_s3")
        if gated or not _wide_k(dtype):
            cfg = _by_name(MATMUL_CONFIGS, "mm_128x128x32_w8_s4")
    tiles = cdiv(m, cfg.block_m) * cdiv(n, cfg.block_n)
    return replace(cfg, split_k=split_count(tiles, cdiv(k, cfg.block_k), num_sms))


def select_pool_config(numel: int) -> BlockConfig:
    return POOL_CONFIGS[0] if numel >= 4096 else POOL_CONFIGS[1]


def select_reduce_config(numel: int) -> BlockConfig:
    return REDUCE_CONFIGS[0] if numel >= 4096 else REDUCE_CONFIGS[1]


def select_softmax_config(columns: int) -> RowConfig:
    return SOFTMAX_CONFIGS[0] if columns > 64 else SOFTMAX_CONFIGS[1]


def select_mean_config(channels: int) -> MeanConfig:
    return MEAN_CONFIGS[0] if channels >= 64 else MEAN_CONFIGS[1]
