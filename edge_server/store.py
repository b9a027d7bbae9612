"""The model store: files under <data-dir>/models/<name>/, downloaded with huggingface_hub."""
from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .catalog import ModelSpec
from .errors import EdgeError, HubError, InsufficientStorage, ModelNotInstalled
from .repo_files import MARKER, PRIOR_FOLDER, safe_name, select
from .settings import Settings

log = logging.getLogger("edge_server.store")

Progress = Callable[[int, "int | None"], None]  # (bytes done, bytes total)
PIECE = 256 << 10  # bytes read between cancellation checks and progress reports
RETRIES = 3  # a cut transfer is resumed this many times before the launch fails
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}  # the data dir's fault, not the network's


@dataclass(frozen=True)
class ModelFiles:
    model: Path
    mmproj: Path | None = None


class DownloadCancelled(EdgeError):
    status, code = 409, "download_cancelled"


def hub_logs_once() -> None:
    """huggingface_hub prints its warnings with a handler of its own and passes them on to ours too: every
    retry line showed twice. Drop its handler; ours (stderr, the log file) write each line once."""
    from huggingface_hub.utils import logging as hub_logging

    hub = hub_logging.get_logger()  # the library's root logger, its handler set up on first import
    for handler in list(hub.handlers):
        hub.removeHandler(handler)


def _auth_headers(token: str | None) -> dict:
    from huggingface_hub.utils import build_hf_headers

    return {**build_hf_headers(token=token or None), "Accept-Encoding": "identity"}


def _fetch(meta, auth: dict, target: Path, report: Callable[[int], None], cancelled: Callable[[], bool]) -> None:
    """Download meta.location into target via target.part, resuming what is there, retrying cut transfers."""
    import httpx2 as httpx
    from huggingface_hub.utils import get_session, hf_raise_for_status

    target.parent.mkdir(parents=True, exist_ok=True)  # a repository's files may sit in subfolders
    part, stamp = target.with_name(target.name + ".part"), target.with_name(target.name + ".part.etag")
    stale = meta.size is not None and part.exists() and part.stat().st_size > meta.size
    if part.exists() and (stale or not stamp.exists() or stamp.read_text() != (meta.etag or "")):
        part.unlink()  # the file changed on the hub since (or the part is wrong): start over
    stamp.write_text(meta.etag or "")

    def check_cancelled():
        if cancelled():
            raise DownloadCancelled(f"The download of {target.name} was cancelled; launch again to resume it.")

    for attempt in range(RETRIES + 1):
        check_cancelled()
        have = part.stat().st_size if part.exists() else 0
        if meta.size is not None and have >= meta.size:
            break
        headers = {**auth, **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with get_session().stream("GET", meta.location, headers=headers, follow_redirects=True,
                                      timeout=httpx.Timeout(15.0, connect=10.0)) as response:
                hf_raise_for_status(response)
                if have and response.status_code != 206:
                    have = 0  # the server sent the whole file
                with open(part, "ab" if have else "wb") as out:
                    report(have)
                    for piece in response.iter_bytes(PIECE):
                        check_cancelled()
                        out.write(piece)
                        have += len(piece)
                        report(have)
            if meta.size is None:
                break
        except httpx.TransportError:
            if attempt == RETRIES:
                raise
            check_cancelled()
            time.sleep(0.5 * 2 ** attempt)
    if meta.size is not None and part.stat().st_size != meta.size:
        size = part.stat().st_size
        part.unlink()  # a wrong part must not fail every later launch
        raise OSError(f"{target.name}: got {size} bytes, expected {meta.size}")
    part.replace(target)
    stamp.unlink(missing_ok=True)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def _walk(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def hub_error(exc: Exception, spec: ModelSpec, offline: bool) -> HubError:
    """Translate a huggingface_hub failure into a JSON-able error with a stable code."""
    from huggingface_hub import errors as hf

    source = f"{spec.repo_id} (revision {spec.revision})"
    if offline:  # nothing failed upstream: the server was told not to ask, so a 409 (a state), not a 502
        return HubError(f"Model {spec.name!r} is not downloaded yet, and downloads are off: HF_HUB_OFFLINE is set "
                        "for this server. To download it, restart the server without HF_HUB_OFFLINE (or with "
                        f"HF_HUB_OFFLINE=0); or copy its file in and add it with `edge-server add PATH`.",
                        status=409, code="hub_offline")
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
        if isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__:
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
        """Return the model's files if they are all present, else None.

        A heavy model's "file" is its folder (a repository snapshot), complete once its marker is written."""
        if spec.is_local:
            model = Path(spec.path).expanduser()
            mmproj = Path(spec.mmproj_path).expanduser() if spec.mmproj_path else None
            if spec.is_folder:
                return ModelFiles(model) if model.is_dir() else None
        elif spec.filename is None:
            folder = self.folder(spec)
            return ModelFiles(folder) if (folder / MARKER).is_file() else None
        else:
            folder = self.folder(spec)
            model = folder / spec.filename
            mmproj = folder / spec.mmproj if spec.mmproj else None
        if model.is_file() and (mmproj is None or mmproj.is_file()):
            return ModelFiles(model, mmproj)
        return None

    def installed_bytes(self, spec: ModelSpec) -> int:
        files = self.files(spec)
        if files is None:
            return 0
        if files.model.is_dir():
            return sum(p.stat().st_size for p in files.model.rglob("*") if p.is_file())
        return sum(p.stat().st_size for p in (files.model, files.mmproj) if p)

    def download(self, spec: ModelSpec, progress: Progress | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> ModelFiles:
        """Fetch missing files and return them; reuse complete files, resume partial ones.

        huggingface_hub gives the URL, the size and ETag, the auth headers, offline mode and its
        errors; the bytes are fetched here into `<file>.part`, a stable name, so a transfer cut by a
        crash, a restart or a kill resumes with a Range request, and `cancelled` is checked between
        pieces.
        """
        existing = self.files(spec)
        if existing or spec.is_local:
            if existing is None:
                raise ModelNotInstalled(f"Local model file for {spec.name!r} not found: {spec.path}")
            return existing
        folder = self.folder(spec)
        if self.settings.hf_offline:
            raise hub_error(None, spec, offline=True)
        hub_logs_once()
        try:
            sources = self._repo_files(spec) if spec.filename is None else {
                name: (spec.repo_id, spec.revision, name)
                for name in [spec.filename] + ([spec.mmproj] if spec.mmproj else [])}
            metas = [(name, self._metadata(repo_id, revision, remote))
                     for name, (repo_id, revision, remote) in sources.items() if not (folder / name).is_file()]
        except Exception as exc:  # huggingface_hub raises many kinds; all become a HubError
            log.warning("metadata of %s failed: %r", spec.name, exc)
            raise hub_error(exc, spec, offline=False) from exc
        total, done, headers = sum(meta.size or 0 for _, meta in metas), 0, _auth_headers(self.settings.hf_token)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(folder, exc) from exc
        self._check_room(spec, folder, metas)
        for name, meta in metas:
            log.info("downloading %s: %s/%s (%s bytes)", spec.name, spec.repo_id, name, meta.size)
            report = (lambda n, base=done: progress(base + n, total)) if progress else (lambda n: None)
            try:
                _fetch(meta, headers, folder / name, report, cancelled)
            except DownloadCancelled:
                raise
            except Exception as exc:
                if any(isinstance(c, OSError) and c.errno == errno.ENOSPC for c in _walk(exc)):
                    # Another writer took the space meanwhile: keep the part, it resumes once there is room.
                    raise InsufficientStorage(
                        f"The disk under {self.root} filled up while downloading {spec.name!r}. The part "
                        f"downloaded is kept: free some space and launch again to resume.") from exc
                local = next((c for c in _walk(exc) if isinstance(c, OSError) and c.errno in UNWRITABLE), None)
                if local is not None:
                    raise self._unwritable(folder, local) from exc
                log.warning("download of %s failed: %r", spec.name, exc)
                raise hub_error(exc, spec, offline=False) from exc
            done += meta.size or 0
        if spec.filename is None:
            (folder / MARKER).write_text("\n".join(sources) + "\n")
        log.info("downloaded %s", spec.name)
        return self.files(spec)

    def _repo_files(self, spec: ModelSpec) -> dict[str, tuple[str, str, str]]:
        """{name in the store: (repo, commit, name in the repo)}: the files of a heavy model's repository (and of its
        prior's, under prior_pipeline/) that its pipeline loads (repo_files.py)."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.settings.hf_endpoint, token=self.settings.hf_token or None)
        listed = {}
        for repo_id, revision, prefix in ((spec.repo_id, spec.revision, ""),
                                          (spec.prior_repo_id, spec.prior_revision, PRIOR_FOLDER + "/")):
            if not repo_id:
                continue
            info = api.model_info(repo_id, revision=revision)
            commit = info.sha or revision  # every file from the commit listed, even if the branch moves meanwhile
            for sibling in info.siblings or ():
                name = sibling.rfilename
                if not safe_name(name) or (spec.prior_repo_id and not prefix and name.startswith(PRIOR_FOLDER)):
                    log.warning("%s lists %r, outside its folder: skipped", repo_id, name)
                    continue
                listed[prefix + name] = (repo_id, commit, name)
        chosen = set(select(list(listed), spec.variant, spec.allow, prefixes=("", PRIOR_FOLDER + "/")))
        return {name: source for name, source in listed.items() if name in chosen}

    def _unwritable(self, folder: Path, exc: OSError) -> EdgeError:
        return EdgeError(f"Cannot write model files under {folder}: {exc.strerror or exc}. Check the data dir "
                         "(its permissions, a read-only or failing disk).", status=500, code="storage_error")

    def _check_room(self, spec: ModelSpec, folder: Path, metas) -> None:
        """Refuse a download that cannot fit, before a byte is written (parts already there count as done)."""
        needed = 0
        for name, meta in metas:
            part = folder / (name + ".part")
            needed += max(0, (meta.size or 0) - (part.stat().st_size if part.exists() else 0))
        free = shutil.disk_usage(folder).free
        if needed + self.settings.disk_margin_bytes > free:
            raise InsufficientStorage(
                f"Model {spec.name!r} needs {_mb(needed)} more on disk; {_mb(free)} are free under {self.root} "
                f"and {_mb(self.settings.disk_margin_bytes)} stay spare (EDGE_DISK_MARGIN_BYTES). Delete a "
                "model or free some space.")

    def _metadata(self, repo_id: str, revision: str, filename: str):
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=self.settings.hf_endpoint)
        return get_hf_file_metadata(url, token=self.settings.hf_token or None, endpoint=self.settings.hf_endpoint)

    def delete(self, spec: ModelSpec) -> None:
        """Remove the model's folder from the store; local-path models are never touched."""
        if spec.is_local:
            log.info("kept %s's file %s: it is the user's, not the store's", spec.name, spec.path)
            return
        folder = self.folder(spec)
        if not folder.exists():
            raise ModelNotInstalled(f"Model {spec.name!r} is not installed.")
        shutil.rmtree(folder)
        log.info("deleted %s from the store", spec.name)
