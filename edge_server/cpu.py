"""How many threads a model computes with by default: one per performance core.

llama-cpp-python's own default is half the logical CPUs, as if every core ran two hyper-threads. On a
2-core machine or a 4-core Raspberry Pi (no SMT) that halves the speed (0.70x measured here with Gemma
3 270M). On a big.LITTLE phone the little cores also slow every token to their pace, since each step
waits for its slowest thread. So count physical cores, one per set of hyper-thread siblings (as
llama.cpp's cpu_get_num_physical_cores() does; core_id alone repeats across an arm64 phone's clusters
since Linux 6.0), and where some cores top out well below the fastest (under 80% of its frequency: a
little cluster, not an Intel "favoured core"), leave those out. Only CPUs this process may run on count
(a container's cpuset).
"""
from __future__ import annotations

import os
from pathlib import Path

SYSFS = Path("/sys/devices/system/cpu")
LITTLE = 0.8  # cores below this share of the fastest core's top frequency are efficiency cores


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
    cores: dict[str, int] = {}  # hyper-thread siblings -> the core's top frequency in kHz (0: unknown)
    for n in cpus:
        key = _read(sysfs / f"cpu{n}" / "topology" / "thread_siblings_list") or f"cpu{n}"
        freq = _read(sysfs / f"cpu{n}" / "cpufreq" / "cpuinfo_max_freq")
        cores[key] = max(cores.get(key, 0), int(freq) if freq and freq.isdigit() else 0)
    top = max(cores.values())
    fast = [f for f in cores.values() if f >= LITTLE * top]
    if top and len(fast) < len(cores):
        slow = max(f for f in cores.values() if f < LITTLE * top)
        return len(fast), (f"{len(fast)} performance cores of {len(cores)} (leaving out {len(cores) - len(fast)} "
                           f"at {slow // 1000} MHz or less)")
    smt = f", {len(cpus)} hardware threads" if len(cpus) > len(cores) else ""
    return len(cores), f"{len(cores)} physical cores{smt}"
