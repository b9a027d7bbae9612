"""Which files of a whole Hugging Face repository a full-mode model needs.

A transformers or diffusers repository often holds each weight several times: safetensors beside
PyTorch pickles, ONNX, Flax and TF exports, half-precision "variants", and for diffusers the
original single-file checkpoints at the top. Downloading all of it would take several times the
disk and time: Stable Cascade's repository is over 100 GB, the parts its pipeline loads are 20.
"""
from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import PurePosixPath

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".onnx_data", ".tflite",
           ".ot", ".gguf", ".mlmodel", ".pb", ".nemo")
NEVER = (".onnx", ".onnx_data", ".msgpack", ".h5", ".tflite", ".ot", ".mlmodel", ".pb", ".gguf", ".nemo")
SKIPPED_FOLDERS = ("onnx", "openvino", "coreml", "flax_model", "tf_model")
SHARD = re.compile(r"-\d{5}-of-\d{5}$")  # model-00001-of-00003.safetensors
MARKER = ".edge-complete"  # written last: its presence means every wanted file is there
PRIOR_FOLDER = "prior_pipeline"  # where a model's second repository (Stable Cascade's prior) is kept


def safe_name(name: str) -> bool:
    """A repository path that stays inside the model's folder, on any system (the hub's answer is not trusted
    blindly): relative, no "..", no backslash or drive colon, no control characters, not our marker."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and MARKER not in path.parts and \
        not any(c in "\\:" or ord(c) < 32 for c in name)


def weight_kind(name: str) -> tuple[str, str, str | None] | None:
    """(folder, stem, variant) for a weight file: "unet/diffusion_pytorch_model.fp16.safetensors" gives
    ("unet", "diffusion_pytorch_model", "fp16"), "model.fp16-00001-of-00002.safetensors" ("", "model", "fp16");
    None for anything else."""
    path = PurePosixPath(name)
    if not path.name.endswith(WEIGHTS):
        return None
    stem = path.name[:-len(next(s for s in WEIGHTS if path.name.endswith(s)))]
    stem = SHARD.sub("", stem)
    parts = stem.rsplit(".", 1)
    variant = parts[1] if len(parts) == 2 else None
    return str(path.parent), parts[0], variant


def select(names: list[str], variant: str | None = None, allow: tuple[str, ...] | None = None,
           prefixes: tuple[str, ...] = ("",)) -> list[str]:
    """The files to download: safetensors where a folder has them, the wanted variant, no exports, no
    hidden files. `allow` globs match the names as given; each of `prefixes` marks one repository's files."""
    names = [n for n in names if safe_name(n) and not PurePosixPath(n).name.startswith(".")]
    if allow:
        names = [n for n in names if any(fnmatch(n, pattern) for pattern in allow)]
    chosen = []
    for prefix in sorted(prefixes, key=len, reverse=True):
        mine = [n for n in names if n.startswith(prefix)]
        names = [n for n in names if not n.startswith(prefix)]
        chosen += [prefix + n for n in _select_one([n[len(prefix):] for n in mine], variant)]
    return chosen


def _select_one(names: list[str], variant: str | None) -> list[str]:
    """select() for the files of one repository, named from its root."""
    names = [n for n in names if not n.endswith(NEVER) and PurePosixPath(n).parts[0] not in SKIPPED_FOLDERS]
    diffusers = "model_index.json" in names
    with_safetensors = {weight_kind(n)[0] for n in names if n.endswith(".safetensors")}

    def unused(name: str) -> bool:
        kind = weight_kind(name)
        return kind is not None and (
            (diffusers and kind[0] == ".")  # the original single-file checkpoints beside the pipeline's folders
            or (kind[0] in with_safetensors and not name.endswith(".safetensors")))  # pickles beside safetensors

    names = [n for n in names if not unused(n)]
    variants: dict[str, set] = {}
    for kind in filter(None, map(weight_kind, names)):
        variants.setdefault(kind[0], set()).add(kind[2])

    def wanted(name: str) -> bool:
        """The asked variant where the folder has it, else the plain weights, else the folder's only variant."""
        kind = weight_kind(name[:-len(".index.json")] if name.endswith(".index.json") else name)
        if kind is None:
            return True
        present = variants.get(kind[0], {None})
        chosen = variant if variant in present else None if None in present else sorted(present)[0]
        return kind[2] == chosen

    return [n for n in names if wanted(n)]
