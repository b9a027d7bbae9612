"""Giving memory back to the operating system."""
from __future__ import annotations

import ctypes


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise; Android's libc has no such call)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
