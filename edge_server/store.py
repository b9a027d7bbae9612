"""The model store: files under <data-dir>/models/<name>/, downloaded with huggingface_hub."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .catalog import ModelSpec
from .errors import HubError, ModelNotInstalled
from .settings import Settings

log = logging.getLogger("edge_server.store")

Progress = Callable[[int, "int | None"], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class ModelFiles:
    model: Path
    mmproj: Path | None = None


def _progress_bar_class(report: Progress):
    """Build a tqdm stand-in that forwards huggingface_hub's byte counts to `report`."""

    class _Reporter:
        def __init__(self, *args, total=None, initial=0, **kwargs):
            self.total, self.n = total, initial
            report(self.n, self.total)

        def update(self, n=1):
            self.n += n
            report(self.n, self.total)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

    return _Reporter


def _walk(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def hub_error(exc: Exception, spec: ModelSpec, offline: bool) -> HubError:
    """Translate a huggingface_hub failure into a JSON-able error with a stable code."""
    from huggingface_hub import errors as hf

    source = f"{spec.repo_id} (revision {spec.revision})"
    if offline:
        return HubError(f"Model {spec.name!r} is not in the store and offline mode (HF_HUB_OFFLINE) is on.",
                        code="hub_offline")
    for cause in _walk(exc):
        if isinstance(cause, (hf.RepositoryNotFoundError, hf.RevisionNotFoundError)):
            return HubError(f"The hub has no repository {source}, or it is gated and needs HF_TOKEN.",
                            code="hub_not_found")
        if isinstance(cause, hf.RemoteEntryNotFoundError) or (
                isinstance(cause, hf.HfHubHTTPError) and getattr(cause.response, "status_code", None) == 404):
            return HubError(f"The hub has no file for {spec.name!r} in {source}.", code="hub_not_found")
        if isinstance(cause, hf.HfHubHTTPError) and getattr(cause.response, "status_code", None) in (401, 403):
            return HubError(f"The hub refused access to {source}; set HF_TOKEN for gated models.",
                            code="hub_unauthorized")
        if isinstance(cause, TimeoutError) or type(cause).__name__.endswith("TimeoutException"):
            return HubError(f"The hub did not answer in time for {source}.", status=504, code="hub_timeout")
    return HubError(f"Could not download {spec.name!r} from the hub: {exc.__class__.__name__}. "
                    "Check the network and HF_ENDPOINT.", code="hub_unreachable")


class ModelStore:
    """Knows where each model's files are, downloads them, and removes only its own."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.models_dir

    def folder(self, spec: ModelSpec) -> Path:
        folder = (self.root / spec.name).resolve()
        # Names are validated by the catalog; this guards the one place files are removed.
        if folder.parent != self.root.resolve():
            raise ModelNotInstalled(f"Model {spec.name!r} has no folder in the store.")
        return folder

    def files(self, spec: ModelSpec) -> ModelFiles | None:
        """Return the model's files if they are all present, else None."""
        if spec.is_local:
            model = Path(spec.path).expanduser()
            mmproj = Path(spec.mmproj_path).expanduser() if spec.mmproj_path else None
        elif spec.filename is None:
            return None  # a backend that fetches its own files (full-mode plugins)
        else:
            folder = self.folder(spec)
            model = folder / spec.filename
            mmproj = folder / spec.mmproj if spec.mmproj else None
        if model.is_file() and (mmproj is None or mmproj.is_file()):
            return ModelFiles(model, mmproj)
        return None

    def installed_bytes(self, spec: ModelSpec) -> int:
        files = self.files(spec)
        return sum(p.stat().st_size for p in (files.model, files.mmproj) if p) if files else 0

    def download(self, spec: ModelSpec, progress: Progress | None = None) -> ModelFiles:
        """Fetch missing files (resuming partial ones) and return them; reuse complete files.

        With `progress`, byte counts go there; without it huggingface_hub draws its own bar (`pull`).
        """
        existing = self.files(spec)
        if existing or spec.is_local:
            if existing is None:
                raise ModelNotInstalled(f"Local model file for {spec.name!r} not found: {spec.path}")
            return existing
        from huggingface_hub import hf_hub_download

        folder = self.folder(spec)
        wanted = [spec.filename] + ([spec.mmproj] if spec.mmproj else [])
        done = 0
        for index, filename in enumerate(wanted):
            if (folder / filename).is_file():
                continue
            log.info("downloading %s: %s/%s", spec.name, spec.repo_id, filename)
            bar = None
            if progress:
                base = done
                bar = _progress_bar_class(lambda n, total, base=base: progress(base + n, total and base + total))
            try:
                path = hf_hub_download(
                    spec.repo_id, filename, revision=spec.revision, local_dir=folder,
                    endpoint=self.settings.hf_endpoint, token=self.settings.hf_token or None,
                    local_files_only=self.settings.hf_offline, tqdm_class=bar,
                )
            except Exception as exc:  # huggingface_hub raises many kinds; all become a HubError
                log.warning("download of %s failed: %r", spec.name, exc)
                raise hub_error(exc, spec, self.settings.hf_offline) from exc
            done += Path(path).stat().st_size
        log.info("downloaded %s", spec.name)
        return self.files(spec)

    def delete(self, spec: ModelSpec) -> None:
        """Remove the model's folder from the store; local-path models are never touched."""
        if spec.is_local:
            return
        folder = self.folder(spec)
        if not folder.exists():
            raise ModelNotInstalled(f"Model {spec.name!r} is not installed.")
        shutil.rmtree(folder)
        log.info("deleted %s from the store", spec.name)
