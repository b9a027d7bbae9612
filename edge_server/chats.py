"""Server-side chats: one JSON file per (model, chat_id) under <data-dir>/chats/, written atomically."""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from .errors import InvalidRequest

log = logging.getLogger("edge_server.chats")

CHAT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_CHAT = "default"


def check_chat_id(chat_id) -> str:
    if chat_id is None:
        return DEFAULT_CHAT
    if not isinstance(chat_id, str) or not CHAT_ID_RE.fullmatch(chat_id):
        raise InvalidRequest("chat_id must be 1 to 64 letters, digits, '_' or '-'.")
    return chat_id


def _empty() -> dict:
    return {"system_prompt": None, "turns": []}


def _valid(data) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("turns"), list)
            and (data.get("system_prompt") is None or isinstance(data["system_prompt"], str))
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


class ChatStore:
    """Chats kept in memory and on disk; every change is written before it is acknowledged."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._chats: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()
        self._load_all()

    def _path(self, model: str, chat_id: str) -> Path:
        return self.root / model / f"{chat_id}.json"

    def _load_all(self) -> None:
        for path in sorted(self.root.glob("*/*.json")):
            model, chat_id = path.parent.name, path.stem
            try:
                data = json.loads(path.read_text("utf-8"))
                if not _valid(data):
                    raise ValueError("unexpected shape")
            except (OSError, ValueError) as exc:
                aside = path.with_name(f"{path.name}.broken-{int(time.time())}")
                log.warning("chat file %s is broken (%s); set aside as %s", path, exc, aside.name)
                path.replace(aside)
                continue
            self._chats[(model, chat_id)] = data

    def get(self, model: str, chat_id: str) -> dict:
        """Return a copy of the chat: {"system_prompt": str|None, "turns": [{role, content}]}."""
        with self._lock:
            return self._copy(model, chat_id)

    def _update(self, model: str, chat_id: str, change) -> None:
        with self._lock:
            chat = self._copy(model, chat_id)
            change(chat)
            write_atomically(self._path(model, chat_id), chat)
            self._chats[(model, chat_id)] = chat

    def _copy(self, model: str, chat_id: str) -> dict:
        # Turns are never changed in place, so a new list is copy enough.
        chat = self._chats.get((model, chat_id)) or _empty()
        return {"system_prompt": chat["system_prompt"], "turns": list(chat["turns"])}

    def add_exchange(self, model: str, chat_id: str, prompt: str, answer: str, n_images: int = 0) -> None:
        """Store a question and its answer; images are noted by count, never stored."""
        user = {"role": "user", "content": prompt, **({"images": n_images} if n_images else {})}
        self._update(model, chat_id, lambda chat: chat["turns"].extend(
            [user, {"role": "assistant", "content": answer}]))

    def set_system_prompt(self, model: str, chat_id: str, text: str) -> None:
        self._update(model, chat_id, lambda chat: chat.update(system_prompt=text))

    def clear(self, model: str, chat_id: str) -> None:
        """Forget the turns; the system prompt stays."""
        self._update(model, chat_id, lambda chat: chat.update(turns=[]))

    def delete_model(self, model: str) -> None:
        with self._lock:
            for key in [k for k in self._chats if k[0] == model]:
                del self._chats[key]
            folder = self.root / model
            if folder.is_dir() and folder.parent == self.root:
                for path in folder.iterdir():
                    path.unlink()
                folder.rmdir()
