"""The authenticated relay in front of llama.cpp's RPC server (issue 22, the worker's network side).

ggml's RPC server has no authentication and must never face a network. A worker runs it on loopback and
exposes it only through this relay: a connection is admitted after it proves the shared key (the server's
EDGE_API_KEY) in an HMAC challenge, never sending the key itself, and the worker proves it back; then
bytes are relayed both ways. The server's side is the same relay backwards: llama.cpp connects to a local
port, the relay does the handshake with the worker and carries the bytes.

The handshake (SHA-256 HMACs, 32-byte random nonces):
    worker -> client   MAGIC + nonce_w
    client -> worker   nonce_c + HMAC(key, "client" + nonce_w + nonce_c)
    worker -> client   HMAC(key, "worker" + nonce_c + nonce_w)         (only if the client's proof holds)
A client that fails, or says nothing for HANDSHAKE_SECONDS, is closed before a byte reaches ggml. The
bytes after it are not encrypted: the key keeps strangers out, it does not hide the model's activations.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import threading

log = logging.getLogger("edge_server.rpc_relay")

MAGIC = b"EDGE-RPC/1\n"
NONCE = 32
HANDSHAKE_SECONDS = 5.0
_CHUNK = 1 << 16


def _proof(key: str, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), role + first + second, hashlib.sha256).digest()


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("closed during the handshake")
        data += part
    return data


def admit(sock: socket.socket, key: str) -> bool:
    """The worker's side of the handshake on an accepted connection: True when the client proved the key."""
    sock.settimeout(HANDSHAKE_SECONDS)
    try:
        ours = secrets.token_bytes(NONCE)
        sock.sendall(MAGIC + ours)
        theirs = _read_exactly(sock, NONCE)
        if not hmac.compare_digest(_read_exactly(sock, 32), _proof(key, b"client", ours, theirs)):
            return False
        sock.sendall(_proof(key, b"worker", theirs, ours))
        return True
    except (OSError, ConnectionError):
        return False
    finally:
        sock.settimeout(None)


def prove(sock: socket.socket, key: str) -> None:
    """The client's side of the handshake on a connection to a worker; raises PermissionError when the
    worker does not speak it or does not hold the key (ConnectionError when it closes)."""
    sock.settimeout(HANDSHAKE_SECONDS)
    try:
        if _read_exactly(sock, len(MAGIC)) != MAGIC:
            raise PermissionError("not an edge-server worker")
        theirs, ours = _read_exactly(sock, NONCE), secrets.token_bytes(NONCE)
        sock.sendall(ours + _proof(key, b"client", theirs, ours))
        if not hmac.compare_digest(_read_exactly(sock, 32), _proof(key, b"worker", ours, theirs)):
            raise PermissionError("the worker does not hold the key")
    finally:
        sock.settimeout(None)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Carry one direction; its end is passed on (a half close), a failure ends both directions."""
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(a: socket.socket, b: socket.socket) -> None:
    """Carry bytes both ways until either side closes, then close both."""
    other = threading.Thread(target=_pump, args=(b, a), daemon=True)
    other.start()
    _pump(a, b)
    other.join()
    a.close()
    b.close()


class Relay:
    """Listens on (host, port); each connection is handed to `handle(sock)` on its own thread."""

    def __init__(self, host: str, port: int, handle):
        self._listener = socket.create_server((host, port), reuse_port=False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._handle = handle
        self._thread = threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(sock,), daemon=True).start()

    def close(self) -> None:
        self._listener.close()


def worker_side(host: str, port: int, target: tuple[str, int], key: str) -> Relay:
    """The worker's listener on the LAN: admitted connections are relayed to ggml's RPC server at `target`
    (on loopback); the rest are closed having reached nothing."""

    def handle(sock: socket.socket) -> None:
        if not admit(sock, key):
            log.warning("refused a connection to the worker: no proof of the key")
            sock.close()
            return
        try:
            upstream = socket.create_connection(target)
        except OSError as exc:
            log.warning("the RPC server at %s:%d does not answer: %s", *target, exc)
            sock.close()
            return
        relay(sock, upstream)

    return Relay(host, port, handle)


def server_side(worker: tuple[str, int], key: str) -> Relay:
    """A loopback port for llama.cpp's RPC client: each connection to it is carried to `worker` after the
    handshake (a worker that fails it gets nothing and the local connection is closed)."""

    def handle(sock: socket.socket) -> None:
        try:
            upstream = socket.create_connection(worker, timeout=HANDSHAKE_SECONDS)
            prove(upstream, key)
        except (OSError, ConnectionError, PermissionError) as exc:
            log.warning("worker %s:%d refused or unreachable: %s", *worker, exc)
            sock.close()
            return
        relay(sock, upstream)

    return Relay("127.0.0.1", 0, handle)
