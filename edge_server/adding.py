"""Serve a GGUF file the user already has: check its header, name it, and write its models.json entry.

Used by `edge-server add PATH` and `edge-server serve --model PATH`. The file stays where it is and stays the
user's: the server reads it in place and never deletes it (catalog.py's `path`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .backends.gguf_header import describe
from .catalog import NAME_RE, Catalog, builtin_names, user_entries
from .errors import CatalogError

MODELS_FILE = "models.json"


class AddError(Exception):
    """The file cannot be added as asked; the message says why and what to do."""


def name_for(path: Path) -> str:
    """A catalog name from a file name: `Qwen2.5-0.5B-Instruct-Q4_K_M.gguf` -> `qwen2.5-0.5b-instruct-q4_k_m`."""
    stem = path.name[:-len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")[:128]
    return name or "model"


def _check_gguf(path: Path, what: str) -> dict:
    if not path.is_file():
        raise AddError(f"{path}: no such file")
    info = describe(path)
    if not info.get("architecture"):
        raise AddError(f"{path}: not a GGUF model file (its header does not read as GGUF v2 or later); "
                       f"the {what} must be a .gguf file such as those llama.cpp loads")
    return info


def add_local(data_dir: Path, path, name: str | None = None, mmproj=None, n_ctx: int | None = None) -> tuple[str, dict]:
    """Add the GGUF file at `path` to `<data_dir>/models.json`; return its name and what its header says.

    Adding the same file again under the same name (or no name) changes nothing. A name already used for
    something else, built-in or in models.json, is refused rather than overwritten."""
    path = Path(path).expanduser().resolve()
    info = _check_gguf(path, "model")
    if info["architecture"] == "clip":
        raise AddError(f"{path} is a vision projector (mmproj), not a model: add the model file with "
                       f"--mmproj {path}")
    entry: dict = {"path": str(path)}
    if mmproj is not None:
        projector = Path(mmproj).expanduser().resolve()
        _check_gguf(projector, "projector")
        entry.update(kind="vision", mmproj_path=str(projector))
    if n_ctx is not None:
        entry["n_ctx"] = n_ctx
    models_file = Path(data_dir) / MODELS_FILE
    try:
        entries = user_entries(models_file)
    except CatalogError as exc:
        raise AddError(f"{exc}; fix or remove it first") from None
    if name is None:
        same = [n for n, e in entries.items() if isinstance(e, dict) and e.get("path") == str(path)]
        if same:
            return same[0], info  # added before: serve it under the name it has
        name = name_for(path)
    if not NAME_RE.match(name):
        raise AddError(f"{name!r} cannot be a model name: use letters, digits, '.', '_' and '-' (128 at most), "
                       "starting with a letter or digit")
    old = entries.get(name)
    if old is not None and (not isinstance(old, dict) or old.get("path") != str(path)):
        raise AddError(f"{models_file} already has a model named {name!r}; choose another with --name")
    if old is None and name in builtin_names():
        raise AddError(f"{name!r} is a built-in catalog model; choose another name with --name")
    if old == entry:
        return name, info
    entries[name] = entry
    try:
        Catalog.load_entries(entries)
    except CatalogError as exc:
        raise AddError(str(exc)) from None
    models_file.parent.mkdir(parents=True, exist_ok=True)
    part = models_file.with_name(MODELS_FILE + ".part")
    part.write_text(json.dumps(entries, indent=2) + "\n", "utf-8")
    os.replace(part, models_file)  # a server starting meanwhile reads the old file or the new, never half
    return name, info


def summary(info: dict) -> str:
    """`llama, 1.2B parameters, Q4_K_M, trained context 131072` from describe()'s answer."""
    parts = [info.get("architecture") or "?"]
    if info.get("parameter_size"):
        parts.append(f"{info['parameter_size']} parameters")
    if info.get("quantization"):
        parts.append(info["quantization"])
    if info.get("context_length"):
        parts.append(f"trained context {info['context_length']}")
    return ", ".join(parts)
