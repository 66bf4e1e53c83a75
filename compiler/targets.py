"""What the compiler assumes of numbers and machines: bytes per dtype and the GPU table."""

from __future__ import annotations

from dataclasses import dataclass

# Element size by the kernels' short dtype names.
ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "i64": 8, "i32": 4}

# The activation dtypes a user names (`vggspec compile --dtype`), and the kernels' name for
# each; "tf32" is fp32 storage computed on TF32 tensor cores.
SHORT_NAME = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
KERNEL_DTYPE = {**SHORT_NAME, "fp32": "fp32", "bf16": "bf16", "tf32": "fp32"}
DTYPE_BYTES = {name: ELEMENT_BYTES[short] for name, short in SHORT_NAME.items()}


@dataclass(frozen=True)
class GpuSpec:
    """Peak rates used by the roofline (dense tensor-core math, no sparsity) and the limits
    that decide whether a compiled kernel fits and how many of its blocks share an SM."""

    name: str
    capability: int  # the compile target: sm_<capability>
    sms: int
    bf16_flops: float
    tf32_flops: float
    fp32_flops: float  # CUDA cores, for kernels without tl.dot
    bandwidth: float  # bytes/s
    shared_per_block: int  # bytes of dynamic shared memory one block may use
    shared_per_sm: int  # bytes of shared memory on one SM (1 KB of it reserved per block)
    registers_per_sm: int = 65536  # also the most one block may use
    threads_per_sm: int = 2048
    blocks_per_sm: int = 32


GPUS = {
    "sm_90": GpuSpec("H100 SXM", 90, 132, 989e12, 495e12, 67e12, 3.35e12, 227 * 1024, 228 * 1024),
    # The same chip as the H100 SXM with HBM3e: same compute and compiled kernels, more
    # bandwidth.
    "h200": GpuSpec("H200 SXM", 90, 132, 989e12, 495e12, 67e12, 4.8e12, 227 * 1024, 228 * 1024),
    "sm_80": GpuSpec(
        "A100 SXM 80GB", 80, 108, 312e12, 156e12, 19.5e12, 2.0e12, 163 * 1024, 164 * 1024
    ),
}

# Between two dependent kernels the GPU drains one and fills the next: an assumed gap per
# launch for the step estimate (not measured here; gpu-check measures the step beside it).
LAUNCH_GAP_S = 4e-6
# Shared memory the hardware keeps per resident block (sm_80 and later).
RESERVED_SHARED_PER_BLOCK = 1024

# The tile selection aims at one GPU's SM count.
DEFAULT_NUM_SMS = GPUS["sm_90"].sms

# The CPU flags that mean bf16 arithmetic in hardware (Linux's /proc/cpuinfo names): AVX-512
# BF16 (Intel Cooper Lake and later, AMD Zen 4 and later) and AMX-BF16 (Intel Sapphire
# Rapids and later). avx512_core alone makes oneDNN emulate bf16, which is no faster.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no /proc/cpuinfo
    (macOS, Windows) or it has no `flags` line (ARM's say `Features`)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bf16 in hardware (NATIVE_BF16_FLAGS). Other systems and
    architectures answer False, so `precision="auto"` stays fp32 there."""
    return bool(cpu_flags(cpuinfo) & set(NATIVE_BF16_FLAGS))
