"""Giving memory back to the operating system."""
from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path


def available_memory(meminfo: str = "/proc/meminfo") -> int | None:
    """Bytes the system can give without swapping (MemAvailable, which Android has too); None if unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resident_memory() -> int | None:
    """This process's resident memory in bytes (Linux and Android); None if unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def free_disk(path: Path) -> int | None:
    """Free bytes on the filesystem holding `path` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise; Android's libc has no such call)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
