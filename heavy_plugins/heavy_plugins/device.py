"""Where a heavy model computes, in what precision, and how its memory is given back."""
from __future__ import annotations

import gc
import logging

log = logging.getLogger("heavy_plugins.device")


def choose(setting: str | None, n_threads: int | None = None):
    """(torch.device, dtype): the --device asked for, else CUDA when present (half precision), else the CPU
    (float32: half precision on a CPU is slower, and bfloat16 is not everywhere)."""
    import torch

    if n_threads:
        torch.set_num_threads(n_threads)
    if setting:
        device = torch.device(setting)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {setting}: this torch build sees no CUDA device")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"--device {setting}: MPS is not available here")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    return device, dtype


def fits_on(device, size: int) -> bool:
    """Whether `size` bytes of weights fit in the accelerator's free memory with room to compute."""
    import torch

    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return size < 0.8 * free


def release(device) -> None:
    """After a model's last reference is dropped: collect it and give the accelerator's cache back."""
    import torch

    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()
    elif device is not None and device.type == "mps":
        torch.mps.empty_cache()


def module_bytes(component) -> int:
    """The bytes of a pipeline component's weights (0 for tokenizers, schedulers and the like)."""
    parameters = getattr(component, "parameters", None)
    return sum(p.numel() * p.element_size() for p in parameters()) if callable(parameters) else 0


def quiet() -> None:
    """No progress bars on the server's stderr: transformers draws one per load, diffusers per step."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
