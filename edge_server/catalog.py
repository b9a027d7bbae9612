"""The model catalog: which names exist and where their files come from."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path, PurePosixPath

from .backends.vision import HANDLERS
from .errors import CatalogError, ModelNotFound

KINDS = ("text", "vision", "image-out", "speech-out")
LITE_BACKEND = "llama-cpp"
BACKEND_KINDS = {LITE_BACKEND: ("text", "vision"), "transformers": ("text", "vision", "speech-out"),
                 "diffusers": ("image-out",)}  # a plugin's other backends are checked when they load
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str = "text"  # text, vision, image-out or speech-out
    repo_id: str | None = None  # Hugging Face repo holding the files
    filename: str | None = None  # model file inside repo_id (GGUF); heavy models take the whole repo
    revision: str = "main"  # branch, tag or commit of repo_id
    path: str | None = None  # a local model file (a folder for heavy models) used in place, never copied or deleted
    mmproj: str | None = None  # vision projector file inside repo_id
    mmproj_path: str | None = None  # a local vision projector file used in place
    chat_handler: str | None = None  # llama-cpp-python multimodal handler (vision only)
    backend: str = LITE_BACKEND  # registered backend that runs it: llama-cpp, transformers or diffusers
    heavy: bool = False  # needs full mode (torch and friends); true for every backend but llama-cpp
    variant: str | None = None  # heavy: the weights variant to take where the repo has it ("fp16", "bf16")
    allow: tuple[str, ...] | None = None  # heavy: glob patterns of the repo files to download (default: all needed)
    prior_repo_id: str | None = None  # Stable Cascade: the prior pipeline's repo, kept in the folder's prior_pipeline/
    prior_revision: str = "main"  # branch, tag or commit of prior_repo_id
    n_ctx: int | None = None  # context used when a launch asks for the default (-1); None: the setting
    size: int | None = None  # bytes on disk, roughly, for listings
    description: str = ""

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def is_folder(self) -> bool:
        """A heavy backend's model is a folder (a repository snapshot), not one file."""
        return self.backend != LITE_BACKEND


_FIELDS = {f.name: f for f in fields(ModelSpec)}


def _check_relative(name: str, key: str, value) -> None:
    if not isinstance(value, str) or not value or PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts:
        raise CatalogError(f"model {name!r}: {key!r} must be a file name inside the repo, got {value!r}")


def parse_spec(name: str, entry) -> ModelSpec:
    """Validate one catalog entry; raise CatalogError naming the entry and the problem."""
    if not NAME_RE.match(name):
        raise CatalogError(f"model {name!r}: names use letters, digits, '.', '_' and '-' only")
    if not isinstance(entry, dict):
        raise CatalogError(f"model {name!r}: expected an object, got {type(entry).__name__}")
    unknown = set(entry) - set(_FIELDS) - {"name"}
    if unknown:
        raise CatalogError(f"model {name!r}: unknown field(s) {', '.join(sorted(unknown))}")
    for key, value in entry.items():
        if key in ("name",) or value is None:
            continue
        expected = _FIELDS[key].type
        ok = (isinstance(value, list) and all(isinstance(v, str) for v in value) if expected.startswith("tuple") else
              isinstance(value, bool) if "bool" in expected else
              isinstance(value, int) and not isinstance(value, bool) if expected.startswith("int") else
              isinstance(value, str))
        if not ok:
            raise CatalogError(f"model {name!r}: field {key!r} has the wrong type ({value!r})")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k != "name"}
    values.setdefault("heavy", values.get("backend", LITE_BACKEND) != LITE_BACKEND)
    spec = ModelSpec(**{**values, "name": name})
    if spec.kind not in KINDS:
        raise CatalogError(f"model {name!r}: kind must be one of {', '.join(KINDS)}")
    for key in ("path", "mmproj_path"):
        value = getattr(spec, key)
        if value is not None and not Path(value).expanduser().is_absolute():
            raise CatalogError(f"model {name!r}: {key!r} must be an absolute path, got {value!r}")
    if spec.path is None:
        if not spec.repo_id:
            raise CatalogError(f"model {name!r}: give either 'path' or 'repo_id' and 'filename'")
        if spec.backend == LITE_BACKEND:
            _check_relative(name, "filename", spec.filename)
    if spec.mmproj is not None:
        _check_relative(name, "mmproj", spec.mmproj)
        if spec.repo_id is None:
            raise CatalogError(f"model {name!r}: 'mmproj' needs 'repo_id'; use 'mmproj_path' with 'path'")
    if spec.kind not in BACKEND_KINDS.get(spec.backend, KINDS):
        raise CatalogError(f"model {name!r}: the {spec.backend} backend runs {' and '.join(BACKEND_KINDS[spec.backend])} "
                           f"models, not {spec.kind}")
    if spec.kind == "vision" and not (spec.mmproj or spec.mmproj_path) and spec.backend == LITE_BACKEND:
        raise CatalogError(f"model {name!r}: a vision model needs 'mmproj' (or 'mmproj_path')")
    if spec.chat_handler is not None and spec.backend == LITE_BACKEND and spec.chat_handler not in HANDLERS:
        raise CatalogError(f"model {name!r}: chat_handler must be one of {', '.join(HANDLERS)}")
    if spec.n_ctx is not None and spec.n_ctx <= 0:
        raise CatalogError(f"model {name!r}: n_ctx must be positive")
    return spec


def builtin_names() -> set[str]:
    return set(_builtin_entries())


def _builtin_entries() -> dict:
    return json.loads(resources.files(__package__).joinpath("catalog.json").read_text("utf-8"))


def user_entries(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except RecursionError:
        raise CatalogError(f"{path}: nested too deeply to be a model list") from None
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected an object mapping model names to entries")
    return data


class Catalog:
    """The built-in catalog overlaid with the user's models.json."""

    def __init__(self, specs: dict[str, ModelSpec]):
        self._specs = specs

    @classmethod
    def load(cls, user_file: Path | None = None) -> "Catalog":
        user = user_entries(user_file) if user_file else {}
        try:
            return cls.load_entries(user)
        except CatalogError as exc:
            where = f"{user_file}: " if user_file else ""
            raise CatalogError(f"{where}{exc}") from None

    @classmethod
    def load_entries(cls, user: dict) -> "Catalog":
        """The built-in catalog overlaid with `user`, the entries of a models.json."""
        entries = _builtin_entries()
        for name, entry in user.items():
            base = dict(entries.get(name, {}))
            if isinstance(entry, dict) and "path" in entry:
                # A local file replaces the hub source entirely.
                for key in ("repo_id", "filename", "mmproj", "revision", "prior_repo_id", "prior_revision", "variant",
                            "allow"):
                    base.pop(key, None)
            if isinstance(entry, dict) and "kind" not in entry and ("mmproj" in entry or "mmproj_path" in entry):
                base["kind"] = "vision"  # naming a projector is enough to make it a vision model
            entries[name] = {**base, **entry} if isinstance(entry, dict) else entry
        return cls({name: parse_spec(name, entry) for name, entry in entries.items()})

    def get(self, name) -> ModelSpec:
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise ModelNotFound(f"Unknown model {name!r}. GET /model/getavailabletodownload lists the names.")
        return spec

    def names(self, full: bool) -> list[str]:
        """Names launchable in this mode: heavy ones only in full mode."""
        return [name for name, spec in self._specs.items() if full or not spec.heavy]

    def __iter__(self):
        return iter(self._specs.values())
