"""agelab.cpu: the CPU description that benchmarks and measurements print."""

from __future__ import annotations

from agelab.cpu import KERNEL_FLAGS, cpu_description, describe_cpu

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""


def test_cpu_description_reads_the_first_processor_and_the_kernel_flags():
    d = cpu_description(INTEL)
    assert d == {"model": "Intel(R) Xeon(R) Platinum 8488C",
                 "flags": ["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"]}
    amd = cpu_description("model name\t: AMD EPYC\nflags\t\t: avx2 avx512f avx512_bf16 sha_ni\n")
    assert amd == {"model": "AMD EPYC", "flags": ["avx2", "avx512f", "avx512_bf16"]}


def test_cpu_description_without_cpuinfo_still_names_something():
    d = cpu_description("")
    assert d["model"] and d["flags"] == []
    line = describe_cpu()  # this machine
    assert line and "(" in line and all(f in KERNEL_FLAGS for f in cpu_description()["flags"])
