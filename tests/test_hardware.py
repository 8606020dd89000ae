"""app.hardware: the CPU's name and vector extensions, read from /proc/cpuinfo (benchmarks and cards record them)."""
from __future__ import annotations

import platform

from app import hardware
from benchmarks.common import machine

AVX2_VM = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 sha_ni
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 sha_ni
"""

AVX512_VM = AVX2_VM.replace("avx2 sha_ni", "avx2 avx512f avx512bw avx512_vnni avx512_bf16 sha_ni")


def test_an_avx2_only_vm_and_an_avx512_vm_tell_apart(tmp_path):
    avx2, avx512 = tmp_path / "avx2", tmp_path / "avx512"
    avx2.write_text(AVX2_VM)
    avx512.write_text(AVX512_VM)
    assert hardware.describe(avx2)["cpu"] == hardware.describe(avx512)["cpu"] == "AMD EPYC"  # same name, other speed
    assert hardware.describe(avx2)["vector_extensions"] == ["avx2", "fma"]
    assert hardware.describe(avx512) == {"cpu": "AMD EPYC",
                                         "vector_extensions": ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]}
    assert "sysret_ss_attrs" not in hardware.cpu_flags(avx2)  # the bugs line is not a feature
    assert {"sse2", "sha_ni"} <= hardware.cpu_flags(avx2)


def test_without_cpuinfo_the_name_comes_from_platform(tmp_path):
    missing = tmp_path / "nowhere"
    assert hardware.describe(missing) == {"cpu": platform.processor() or platform.machine(), "vector_extensions": []}
    assert hardware.cpu_flags(missing) == set()


def test_benchmarks_record_the_vector_extensions():
    assert machine()["vector_extensions"] == hardware.describe()["vector_extensions"]
