"""How many threads a model computes with by default: one per performance core.

llama-cpp-python's own default is half the logical CPUs, as if every core ran two hyper-threads. On a
2-core machine or a 4-core Raspberry Pi (no SMT) that halves the speed (0.70x measured here with Gemma
3 270M). On a big.LITTLE phone the little cores also slow every token to their pace, since each step
waits for its slowest thread. So count physical cores, one per core_id whatever its hyper-threads (as
llama.cpp's cpu_get_num_math() does), and where the cores have different top frequencies, leave out the
slowest class (the little cluster). Only CPUs this process may run on count (a container's cpuset).
"""
from __future__ import annotations

import os
from pathlib import Path

SYSFS = Path("/sys/devices/system/cpu")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _allowed() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def default_threads(sysfs: Path = SYSFS, allowed: set[int] | None = None) -> tuple[int, str]:
    """Return (threads, why): the performance cores this process may use, and a phrase for the log."""
    allowed = _allowed() if allowed is None else allowed
    cpus = sorted(int(p.name[3:]) for p in sysfs.glob("cpu[0-9]*") if p.name[3:].isdigit())
    cpus = [n for n in cpus if allowed is None or n in allowed]
    cpus = [n for n in cpus if _read(sysfs / f"cpu{n}" / "online") != "0"]
    if not cpus:
        count = len(allowed) if allowed else (os.cpu_count() or 1)
        return count, f"{count} CPUs (no CPU topology to read)"
    cores: dict[tuple[str | None, str], int] = {}  # (package, core) -> its top frequency in kHz (0: unknown)
    for n in cpus:
        topology = sysfs / f"cpu{n}" / "topology"
        key = (_read(topology / "physical_package_id"), _read(topology / "core_id") or f"cpu{n}")
        freq = _read(sysfs / f"cpu{n}" / "cpufreq" / "cpuinfo_max_freq")
        cores[key] = max(cores.get(key, 0), int(freq) if freq and freq.isdigit() else 0)
    classes = sorted(set(cores.values()))
    if len(classes) > 1 and classes[0] > 0:
        fast = [f for f in cores.values() if f > classes[0]]
        return len(fast), (f"{len(fast)} performance cores of {len(cores)} (leaving out {len(cores) - len(fast)} "
                           f"at {classes[0] // 1000} MHz)")
    smt = f", {len(cpus)} hardware threads" if len(cpus) > len(cores) else ""
    return len(cores), f"{len(cores)} physical cores{smt}"
