"""CPU runtime settings shared by the trainer and the evaluators."""

from __future__ import annotations


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """glibc only, process-wide and permanent: allocations up to ``limit`` bytes come from the heap and freed
    memory is kept for reuse instead of being unmapped (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).

    By default glibc maps large allocations (activations of MBs) with mmap and unmaps them when
    freed, so every forward/backward pass page-faults its activations in again: system time
    spent on every pass (measured for AIS and for training: docs/performance.md). Returns
    whether it was applied. Peak memory is unchanged; freed memory is just not returned to the
    system until the process ends.
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


# Instruction-set flags (Linux /proc/cpuinfo names) that change which kernels oneDNN runs, and with
# them float summation orders and speed: every speed figure should say which of them its CPU had.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_description(cpuinfo: str | None = None) -> dict:
    """{"model": CPU model name, "flags": the KERNEL_FLAGS it has} for benchmark and measurement reports.

    Read from /proc/cpuinfo on Linux (or the given text of it); elsewhere the model is what
    :func:`platform.processor` says and the flags are unknown (an empty list).
    """
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's entry
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    have = set(fields.get("flags", "").split())
    return {"model": model, "flags": [f for f in KERNEL_FLAGS if f in have]}


def describe_cpu() -> str:
    """One line naming this CPU and its kernel flags, e.g. ``AMD EPYC (avx2, avx512f, avx512_bf16)``."""
    d = cpu_description()
    return f"{d['model']} ({', '.join(d['flags']) or 'no AVX-512/AMX flags seen'})"


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
