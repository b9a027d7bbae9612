"""Server-side chats: one JSON file per (model, chat_id) under <data-dir>/chats/, written atomically."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from .errors import EdgeError, InvalidRequest

log = logging.getLogger("edge_server.chats")

CHAT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_CHAT = "default"
_CAPITAL = re.compile(r"[A-Z]")
_MARKED = re.compile(r"\^([a-z])")


def file_stem(chat_id: str) -> str:
    """The chat's file name (without .json): capitals become '^' and the small letter ("Trip" -> "^trip"), so ids
    that differ only in case stay apart where file names do not (FAT, exFAT, Android's shared storage)."""
    return _CAPITAL.sub(lambda m: "^" + m.group().lower(), chat_id)


def chat_id_of(stem: str) -> str | None:
    """The chat id a file name stands for, or None if it is no chat's (file_stem never writes it)."""
    chat_id = _MARKED.sub(lambda m: m.group(1).upper(), stem)
    return chat_id if CHAT_ID_RE.fullmatch(chat_id) and file_stem(chat_id) == stem else None


def check_chat_id(chat_id) -> str:
    if chat_id is None:
        return DEFAULT_CHAT
    if not isinstance(chat_id, str) or not CHAT_ID_RE.fullmatch(chat_id):
        raise InvalidRequest("chat_id must be 1 to 64 letters, digits, '_' or '-'.")
    return chat_id


def _empty() -> dict:
    # context_start: turns before it are kept but no longer sent to the model (see Generator._fit).
    return {"system_prompt": None, "turns": [], "context_start": 0}


def _valid(data) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("turns"), list)
            and (data.get("system_prompt") is None or isinstance(data["system_prompt"], str))
            and type(data.get("context_start", 0)) is int and data.get("context_start", 0) >= 0
            and all(isinstance(t, dict) and t.get("role") in ("user", "assistant") and isinstance(t.get("content"), str)
                    for t in data["turns"]))


def write_atomically(path: Path, data: dict) -> None:
    """Write to a temp file, fsync, then rename over `path`, so a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Reservation:
    """A chat's place while an answer for it is being made: it counts against the chat limit before the chat's
    file exists, and turns stale when the chat is cleared or deleted meanwhile (the answer is then not stored:
    the clear or delete wins)."""

    def __init__(self, store: "ChatStore", key: tuple[str, str]):
        self._store, self.key, self.stale, self.held = store, key, False, True

    def release(self) -> None:
        self._store._release(self)


class ChatStore:
    """Chats on disk, read when first asked for and kept in a small cache; every change is written before
    it is acknowledged. Bounded: chats per model, bytes per chat, bytes per system prompt."""

    CACHED = 64  # chats kept in memory (the rest are read again from disk when asked for)

    def __init__(self, root: Path, max_chats: int = 256, max_bytes: int = 1 << 20, max_system_prompt: int = 64 << 10):
        self.root = Path(root)
        self.max_chats, self.max_bytes, self.max_system_prompt = max_chats, max_bytes, max_system_prompt
        self._chats: OrderedDict[tuple[str, str], dict] = OrderedDict()
        self._reserved: dict[tuple[str, str], list[Reservation]] = {}  # answers in flight, by chat
        self._lock = threading.Lock()
        self._remove_orphans()
        self._rename_capitals()

    def _path(self, model: str, chat_id: str) -> Path:
        return self.root / model / f"{file_stem(chat_id)}.json"

    def _rename_capitals(self) -> None:
        """Give files written before file_stem existed ("Trip.json") their new names ("^trip.json")."""
        for path in self.root.glob("*/*.json*"):
            stem, dot, rest = path.name.partition(".")
            if path.parent.is_symlink() or not _CAPITAL.search(stem) or not CHAT_ID_RE.fullmatch(stem):
                continue
            target = path.with_name(file_stem(stem) + dot + rest)
            if target.exists():
                log.warning("kept %s: %s is there already", path, target.name)
                continue
            path.rename(target)
            log.info("renamed %s to %s (chat file names keep ids apart by case)", path, target.name)

    def _remove_orphans(self) -> None:
        """Temp files left by a crash mid-write (the chat file itself is always whole)."""
        for path in self.root.glob("*/*.json*.tmp"):
            path.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted write", path)

    def _load(self, model: str, chat_id: str) -> dict:
        path = self._path(model, chat_id)
        try:
            data = json.loads(path.read_text("utf-8"))
            if not _valid(data):
                raise ValueError("unexpected shape")
            return {**_empty(), **data}
        except FileNotFoundError:
            return _empty()
        except (OSError, ValueError, RecursionError) as exc:
            aside = path.with_name(f"{path.name}.broken-{int(time.time())}")
            log.warning("chat file %s is broken (%s); set aside as %s", path, exc, aside.name)
            path.replace(aside)
            return _empty()

    def _cached(self, model: str, chat_id: str) -> dict:
        key = (model, chat_id)
        chat = self._chats.pop(key, None)
        if chat is None:
            chat = self._load(model, chat_id)
        self._chats[key] = chat
        while len(self._chats) > self.CACHED:
            self._chats.popitem(last=False)
        return chat

    def get(self, model: str, chat_id: str) -> dict:
        """Return a copy of the chat: {"system_prompt": str|None, "turns": [{role, content}]}."""
        with self._lock:
            return self._copy(model, chat_id)

    def set_aside(self, model: str, chat_id: str) -> list[str]:
        """Names of this chat's files that could not be read and were moved out of the way."""
        return sorted(p.name for p in (self.root / model).glob(f"{file_stem(chat_id)}.json.broken-*"))

    def _update(self, model: str, chat_id: str, change, since: Reservation | None = None,
                count: bool = False) -> None:
        """Change the chat and write it; not if `since` turned stale (the chat was cleared or deleted after the
        answer began); with `count`, a new chat is first checked against the limit, under the same lock."""
        with self._lock:
            if since is not None and since.stale:
                log.info("%s/%s was cleared or deleted while answering: the answer is not stored", model, chat_id)
                return
            if count:
                self._check_count(model, chat_id)
            chat = self._copy(model, chat_id)
            change(chat)
            write_atomically(self._path(model, chat_id), chat)
            self._chats[(model, chat_id)] = chat

    def _copy(self, model: str, chat_id: str) -> dict:
        # Turns are never changed in place, so a new list is copy enough.
        chat = self._cached(model, chat_id)
        return {"system_prompt": chat["system_prompt"], "turns": list(chat["turns"]),
                "context_start": chat["context_start"]}

    def reserve(self, model: str, chat_id: str, adding: int) -> Reservation:
        """Hold the chat's place for an answer, if `adding` more bytes (a question) fit in the chat and a new chat
        is not one too many. The place counts against the limit at once (not when the answer is written, which
        let concurrent first messages to new chats overshoot it); release() gives it back."""
        with self._lock:
            chat = self._cached(model, chat_id)
            size = sum(len(t["content"].encode("utf-8")) for t in chat["turns"])
            if size + adding > self.max_bytes:
                raise EdgeError(f"The chat holds {size} bytes; its limit is {self.max_bytes}. Clear it "
                                "(DELETE /chat/clearchat) or use another chat_id.", status=413, code="chat_too_large")
            self._check_count(model, chat_id)
            reservation = Reservation(self, (model, chat_id))
            self._reserved.setdefault(reservation.key, []).append(reservation)
            return reservation

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation.held:
                reservation.held = False
                held = self._reserved.get(reservation.key, [])
                held.remove(reservation)
                if not held:
                    del self._reserved[reservation.key]

    def _forget_answers(self, model: str, chat_id: str | None = None) -> None:
        """Mark the answers in flight for the chat (None: every chat of the model) as not to be stored."""
        for key, held in self._reserved.items():
            if key[0] == model and chat_id in (None, key[1]):
                for reservation in held:
                    reservation.stale = True

    def _check_count(self, model: str, chat_id: str) -> None:
        """Raise if a new chat would pass the model's limit; chats with an answer in flight count too."""
        folder = self.root / model
        if self._path(model, chat_id).exists() or (model, chat_id) in self._reserved:
            return
        pending = sum(1 for (m, c) in self._reserved if m == model and not self._path(m, c).exists())
        chats = sum(1 for _ in folder.glob("*.json")) if folder.is_dir() and not folder.is_symlink() else 0
        if chats + pending >= self.max_chats:
            raise EdgeError(f"Model {model!r} has {self.max_chats} chats, the limit; clear or reuse one.",
                            status=409, code="too_many_chats")

    def add_exchange(self, model: str, chat_id: str, prompt: str, answer: str, n_images: int = 0,
                     since: Reservation | None = None, cut_at: int | None = None) -> None:
        """Store a question and its answer; images are noted by count, never stored. Not if the chat was
        cleared or deleted since `since` was reserved. `cut_at`: the answer stopped at its token limit after
        that many tokens (the page says so and offers to continue)."""
        user = {"role": "user", "content": prompt, **({"images": n_images} if n_images else {})}
        cut = {"finish_reason": "length", "completion_tokens": cut_at} if cut_at else {}
        self._update(model, chat_id, lambda chat: chat["turns"].extend(
            [user, {"role": "assistant", "content": answer, **cut}]), since=since)

    def set_context_start(self, model: str, chat_id: str, start: int, n_turns: int,
                          since: Reservation | None = None) -> None:
        """Move where the prompt begins, unless the chat changed meanwhile (cleared, say) from `n_turns` turns."""
        def change(chat):
            if len(chat["turns"]) == n_turns:
                chat["context_start"] = start
        self._update(model, chat_id, change, since=since)

    def set_system_prompt(self, model: str, chat_id: str, text: str) -> None:
        if len(text.encode("utf-8")) > self.max_system_prompt:
            raise EdgeError(f"The system prompt is longer than {self.max_system_prompt} bytes.", status=413,
                            code="system_prompt_too_large")
        self._update(model, chat_id, lambda chat: chat.update(system_prompt=text), count=True)

    def clear(self, model: str, chat_id: str) -> None:
        """Forget the turns, and any broken copies set aside; the system prompt stays."""
        with self._lock:
            self._forget_answers(model, chat_id)  # an answer in flight must not bring the turns back
        for name in self.set_aside(model, chat_id):
            (self.root / model / name).unlink(missing_ok=True)
        if self._path(model, chat_id).exists():
            self._update(model, chat_id, lambda chat: chat.update(turns=[], context_start=0))

    def summaries(self, model: str) -> list[dict]:
        """The model's chats, newest first: id, a title from the first question, turn count, last change."""
        folder = self.root / model
        if folder.is_symlink() or not folder.is_dir():
            return []
        found = []
        for path in folder.glob("*.json"):
            chat_id = chat_id_of(path.stem)
            if chat_id is None:
                continue
            with self._lock:
                chat = self._chats.get((model, chat_id)) or self._load(model, chat_id)
            first = next((t["content"] for t in chat["turns"] if t["role"] == "user"), None)
            title = " ".join(first.split())[:80] if first else None
            try:
                updated = int(path.stat().st_mtime)
            except FileNotFoundError:  # set aside while loading
                continue
            found.append({"chat_id": chat_id, "title": title, "turns": len(chat["turns"]), "updated": updated,
                          "system_prompt": chat["system_prompt"] is not None})
        return sorted(found, key=lambda c: c["updated"], reverse=True)

    def delete(self, model: str, chat_id: str) -> None:
        """Forget the chat entirely: its file, broken copies set aside, and the cached copy."""
        with self._lock:
            self._forget_answers(model, chat_id)  # an answer in flight must not write the chat again
            self._chats.pop((model, chat_id), None)
            self._path(model, chat_id).unlink(missing_ok=True)
            for name in self.set_aside(model, chat_id):
                (self.root / model / name).unlink(missing_ok=True)

    def delete_model(self, model: str) -> None:
        with self._lock:
            self._forget_answers(model)
            for key in [k for k in self._chats if k[0] == model]:
                del self._chats[key]
            folder = self.root / model
            if folder.is_symlink():
                folder.unlink()  # never follow a link out of the data dir
            elif folder.is_dir() and folder.parent == self.root:
                shutil.rmtree(folder)  # does not follow links inside either
