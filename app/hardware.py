"""The CPU this process runs on: its name, and the vector extensions that decide how fast a model runs.

The development VMs all call themselves "AMD EPYC", yet some have AVX-512 (with VNNI, which LiteRT's
int8 kernels use, and BF16) and some only AVX2, and the same model costs about three times more on the
latter, to serve and to train: benchmarks and model cards record which was measured.
"""
from __future__ import annotations

import platform
from pathlib import Path

# The extensions that change model speed here, in the order they arrived.
VECTOR_EXTENSIONS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str | None, set[str]]:
    """The first processor's model name and flags, from ``/proc/cpuinfo`` (None and nothing where absent)."""
    name, flags = None, set()
    try:
        text = path.read_text()
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return name, flags


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """All the CPU's feature flags (empty where ``/proc/cpuinfo`` cannot be read)."""
    return _cpuinfo(path)[1]


def describe(path: Path = Path("/proc/cpuinfo")) -> dict:
    """``{"cpu": name, "vector_extensions": [...]}`` from one reading, for a benchmark's or model card's record:
    the model name (e.g. "AMD EPYC"; the platform's where /proc/cpuinfo cannot be read) and which of
    :data:`VECTOR_EXTENSIONS` the CPU has (e.g. ``["avx2", "fma"]`` on an AVX2-only VM)."""
    name, flags = _cpuinfo(path)
    return {"cpu": name or platform.processor() or platform.machine(),
            "vector_extensions": [ext for ext in VECTOR_EXTENSIONS if ext in flags]}
