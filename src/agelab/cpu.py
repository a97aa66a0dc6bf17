"""CPU runtime settings shared by the trainer and the evaluators."""

from __future__ import annotations


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """glibc only, process-wide and permanent: allocations up to ``limit`` bytes come from the heap and freed
    memory is kept for reuse instead of being unmapped (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).

    By default glibc maps large allocations (activations of MBs) with mmap and unmaps them when
    freed, so every forward/backward pass page-faults its activations in again. At AIS's batch of
    1,600 that cost about a third of the CPU time; in training (batch 64, CIFAR nets) a few
    percent (docs/performance.md). Returns whether it was applied. Peak memory is unchanged; freed
    memory is just not returned to the system until the process ends.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3
    limit = min(int(limit), 2**31 - 1)
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))


def has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively on this CPU (AVX512-BF16 or AMX).

    Without it, bf16 autocast on CPU emulates bfloat16 and is slower than fp32.
    """
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_problem(amp: str, device_type: str) -> str | None:
    """Why ``--amp amp`` cannot run on a device of this type, or None; shared by config and trainer checks."""
    if amp == "bf16" and device_type == "cpu" and not has_native_bf16():
        return ("bf16 autocast needs a GPU or a CPU with native bfloat16 (AVX512-BF16 or AMX); "
                "this CPU has neither: use --amp off")
    return None
