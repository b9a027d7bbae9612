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


def weights_variant(folder) -> str | None:
    """The weights variant a folder holds ("fp16", "bf16"), which from_pretrained must be told: a folder with
    only `model.fp16.safetensors` (or `model.fp16-00001-of-00002.safetensors`) has no plain weights to find."""
    from edge_server.repo_files import weight_kind

    kinds = [weight_kind(path.relative_to(folder).as_posix()) for path in folder.rglob("*.safetensors")]
    plain = {kind[0] for kind in kinds if kind and not kind[2]}
    return next((kind[2] for kind in kinds if kind and kind[2] and kind[0] not in plain), None)


class Held:
    """What a loaded heavy model does on kill: drop its weights, collect them, give the accelerator's cache back."""
    model = None
    device = None

    def close(self) -> None:
        self.model = None
        release(self.device)


def module_bytes(component) -> int:
    """The bytes of a pipeline component's weights (0 for tokenizers, schedulers and the like)."""
    parameters = getattr(component, "parameters", None)
    return sum(p.numel() * p.element_size() for p in parameters()) if callable(parameters) else 0


def quiet(diffusers: bool = False) -> None:
    """Keep the server's log to its own lines: no progress bars (transformers draws one per load, diffusers per
    pipeline) and no library warnings (the Stable Cascade pipelines warn of their deprecation six times a load,
    the CLIP image processors that they fall back from torchvision)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    if diffusers:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        diffusers_logging.set_verbosity_error()
