"""One typed settings object, built from defaults < environment < explicit overrides."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """Return the per-user data folder (XDG on Linux and Termux, where $HOME is the app's home)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "edge-server"


def truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Settings:
    host: str = "127.0.0.1"  # address waitress binds to; 0.0.0.0 serves the LAN
    port: int = 8000  # TCP port
    data_dir: Path = field(default_factory=default_data_dir)  # models/, chats/ and models.json live here
    threads: int = 12  # waitress worker threads (queued streams hold one each)
    full: bool = False  # full mode: discover heavy backend plugins through entry points
    device: str | None = None  # full mode: torch device ("cpu", "cuda", "cuda:1", "mps"); None: CUDA if present
    max_image_side: int = 2048  # full mode: largest picture side /generate/imagefromtext draws, pixels
    max_inference_steps: int = 200  # full mode: most denoising steps one picture may ask for
    max_speech_chars: int = 20_000  # full mode: longest text /generate/texttospeech reads aloud, characters
    queue_size: int = 8  # requests allowed to wait for one busy model before 503 busy
    reserved_threads: int = 2  # workers never given to slow work (streams, link fetches, downloads)
    max_connections: int = 500  # open connections waitress keeps (slow clients wait in these, not in workers)
    max_body_bytes: int = 32 * 1024 * 1024  # largest request body accepted (413 above)
    memory_check: bool = True  # refuse a launch whose estimate passes MemAvailable (507 insufficient_memory)
    meminfo_path: str = "/proc/meminfo"  # where MemAvailable is read (tests point it at a file)
    keep_alive: float = 0  # seconds a model may sit idle before it is unloaded (0: never); per launch too
    disk_margin_bytes: int = 64 * 1024 * 1024  # free disk a download must leave (507 insufficient_storage)
    default_n_ctx: int = 8192  # n_ctx used by /model/launch when the body omits it
    n_threads: int | None = None  # CPU threads a model computes with (None: one per performance core, cpu.py)
    parallel: int | None = None  # streams one GGUF model decodes together (None: 4, or fewer if memory is short)
    workers: str = ""  # edge-server workers to split GGUF models over, "host:port,host:port" (port 50052 if left out)
    split: str = "auto"  # auto: split a model too big for this device (weights over 3/4 of its free memory); always
    hf_endpoint: str | None = None  # Hugging Face hub URL (HF_ENDPOINT); None means huggingface.co
    hf_token: str | None = None  # token for gated repos (HF_TOKEN)
    hf_offline: bool = False  # never reach the hub, only use files already in the store (HF_HUB_OFFLINE)
    max_image_bytes: int = 10 * 1024 * 1024  # one image, upload or link (413 above)
    max_images: int = 4  # images in one request
    max_image_pixels: int = 40_000_000  # Pillow's decompression-bomb limit, pixels
    image_max_side: int = 1024  # larger images are downscaled to this many pixels on their long side
    max_decode_pixels: int = 64_000_000  # pixels being decoded at once, server-wide (bounds image memory)
    image_wait: float = 30.0  # seconds an image may wait for the decode budget before 503 busy
    allow_private_links: bool = False  # let image links point at loopback/LAN addresses
    link_timeout: float = 10.0  # seconds to connect, and between bytes, when fetching an image link
    link_max_redirects: int = 3  # redirects followed for one image link
    link_deadline: float = 30.0  # seconds one image link may take in all: connect, headers and body
    max_prompt_bytes: int = 256 * 1024  # one prompt, checked before tokenizing (413 above)
    max_system_prompt_bytes: int = 64 * 1024  # one system prompt (413 above)
    max_chat_bytes: int = 1024 * 1024  # text one chat may hold before it must be cleared (413 above)
    max_chats_per_model: int = 256  # chat ids one model may have (409 above)
    api_key: str | None = None  # clients send it as "Authorization: Bearer <key>"; None: see security.resolve_api_key
    no_auth: bool = False  # serve a non-loopback address without any key, knowingly
    allowed_hosts: str = ""  # extra Host names accepted, comma-separated ("*": any); IPs and localhost always are
    cors_origins: str = ""  # origins allowed to call from a browser, comma-separated ("*" only if written)

    @property
    def models_dir(self) -> Path:
        return Path(self.data_dir) / "models"

    @property
    def chats_dir(self) -> Path:
        return Path(self.data_dir) / "chats"

    @property
    def key_file(self) -> Path:
        return Path(self.data_dir) / "api_key"

    @property
    def max_streams(self) -> int:
        """Streams (running or queued) the whole server accepts at once."""
        return max(1, self.threads - self.reserved_threads)


# EDGE_<NAME> for every field, plus the hub's own variable names.
_ENV_ALIASES = {"hf_endpoint": "HF_ENDPOINT", "hf_token": "HF_TOKEN", "hf_offline": "HF_HUB_OFFLINE", "full": "EDGE_FULL_MODE"}


def _convert(f: dataclasses.Field, raw):
    if raw is None:
        return None
    kind = str(f.type)
    if kind.startswith("bool"):
        return raw if isinstance(raw, bool) else truthy(str(raw))
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        value = float(raw)
        if not math.isfinite(value):  # "inf" parses, and would reach /model/status as a non-JSON Infinity
            raise ValueError(f"{raw!r} is not a finite number")
        return value
    if kind.startswith("Path"):
        return Path(raw).expanduser()
    return raw


def build_settings(overrides: dict | None = None, environ: dict | None = None) -> Settings:
    """Build settings from defaults, then the environment, then `overrides` (CLI flags or a test dict)."""
    environ = os.environ if environ is None else environ
    values = {}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name, f in fields.items():
        for key in (_ENV_ALIASES.get(name), f"EDGE_{name.upper()}"):
            if key and environ.get(key, "") != "":
                try:
                    values[name] = _convert(f, environ[key])
                except ValueError as exc:
                    raise ValueError(f"environment variable {key}: {exc}") from None
                break
    for name, value in (overrides or {}).items():
        if name not in fields:
            raise ValueError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = _convert(fields[name], value)
    return Settings(**values)
