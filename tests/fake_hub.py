"""A local HTTP server that answers like the Hugging Face hub's resolve endpoint."""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
MODEL_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(/revision/(?P<rev>[^/]+))?$")


class FakeHub:
    """Serves {(repo_id, filename): bytes}; can cut one transfer short to test resumes."""

    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.cut_after: int | None = None  # bytes sent before the next GET of a longer file is cut off
        self.delay: float = 0.0  # seconds to wait between chunks (for progress tests)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, repo_id: str, filename: str, data: bytes) -> None:
        self.files[(repo_id, filename)] = data

    def add_folder(self, repo_id: str, folder: Path) -> None:
        """Serve every file under `folder` (a save_pretrained output) as a repository."""
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                self.add(repo_id, path.relative_to(folder).as_posix(), path.read_bytes())

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self, filename: str) -> list[str | None]:
        """The Range headers of the GETs made for `filename`."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + filename)]

    def _model_info(self, handler: BaseHTTPRequestHandler, repo: str, body: bool) -> None:
        """GET /api/models/{repo}/revision/{rev}: what HfApi.model_info reads (the file list)."""
        names = sorted(name for (repo_id, name) in self.files if repo_id == repo)
        if not names:
            handler.send_response(404)
            handler.send_header("X-Error-Code", "RepoNotFound")
            data = b'{"error": "Repository not found"}'
        else:
            handler.send_response(200)
            data = json.dumps({"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                               "siblings": [{"rfilename": name} for name in names]}).encode()
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        import time

        self.requests.append((handler.command, handler.path, handler.headers.get("Range")))
        self.authorizations.append(handler.headers.get("Authorization"))
        info = MODEL_INFO.match(handler.path.split("?")[0])
        if info:
            return self._model_info(handler, info["repo"], body)
        match = RESOLVE.match(handler.path.split("?")[0])
        data = self.files.get((match["repo"], match["file"])) if match else None
        if data is None:
            handler.send_response(404)
            handler.send_header("X-Error-Code", "EntryNotFound")
            handler.send_header("X-Repo-Commit", COMMIT)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        start = 0
        rng = handler.headers.get("Range")
        if body and rng:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
        chunk = data[start:]
        handler.send_response(206 if start else 200)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(chunk) if body else len(data)))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if not body:
            return
        limit = self.cut_after if self.cut_after is not None and len(chunk) > self.cut_after else None
        if limit is not None:
            self.cut_after = None
        step = 64 * 1024
        for offset in range(0, len(chunk), step):
            if limit is not None and offset >= limit:
                handler.close_connection = True
                handler.connection.shutdown(2)  # the transfer dies mid-file
                return
            handler.wfile.write(chunk[offset:offset + step])
            if self.delay:
                time.sleep(self.delay)
