"""The memory check before a launch: how many streams a model may have, or the 507 that says it does not fit."""
from __future__ import annotations

from .errors import InsufficientMemory
from .memory import available_memory

CTX_BLOCK = 256  # llama.cpp's context granularity (and minimum)
DEFAULT_PARALLEL = 4  # streams a GGUF model decodes together, when memory allows and nobody says otherwise


def check_memory(spec, backend, files, n_ctx: int, parallel: int | None, settings, enforce: bool,
                 running_copy: tuple[int, int] | None = None) -> int:
    """The streams to load with: `parallel`, or (None) DEFAULT_PARALLEL or fewer if the available memory
    holds fewer. Refuses a load that the available memory cannot hold (the estimate errs high).
    running_copy: (n_ctx, streams) of the copy a relaunch with another context replaces, whose memory comes back."""
    try:
        needs = backend.memory_needs(files.model, files.mmproj) if hasattr(backend, "memory_needs") else None
    except (ValueError, OSError):
        needs = None  # an unreadable header fails the load itself, with its own message
    available = available_memory(settings.meminfo_path) if settings.memory_check else None
    if needs is None or available is None:
        return parallel or DEFAULT_PARALLEL
    if running_copy is not None:  # a relaunch with another context: the running copy goes first
        available += needs.at(*running_copy)
    streams = parallel or next((p for p in range(DEFAULT_PARALLEL, 1, -1) if needs.at(n_ctx, p) <= available), 1)
    if not enforce or needs.at(n_ctx, streams) <= available:
        return streams
    largest = needs.largest_context(available, streams)
    gb = lambda size: f"{size / 1e9:.2f} GB"  # noqa: E731
    advice = (f"At n_ctx {largest} it would fit" if largest >= CTX_BLOCK else "It does not fit at any context size")
    each, fewer = (f" with {streams} streams", 'send a smaller "parallel", ') if streams > 1 else ("", "")
    raise InsufficientMemory(
        f"Model {spec.name!r} needs about {gb(needs.at(n_ctx, streams))} at n_ctx {n_ctx}{each} (weights "
        f"{gb(needs.weights)}, context {gb(needs.cache(n_ctx, streams) + n_ctx * needs.work_per_token)}, "
        f"runtime {gb(needs.fixed)}); {gb(available)} is available. {advice}; close other apps, "
        f"{fewer}or send \"force\": true to load it anyway.")
