"""The authenticated relay in front of llama.cpp's RPC server: a worker's network side, and the server's.

ggml's RPC server has no authentication and must never face a network. A worker runs it on loopback and
exposes it only through this relay: a connection is admitted after it proves the shared key (the server's
EDGE_API_KEY) in an HMAC challenge, never sending the key itself, and the worker proves it back; then
bytes are relayed both ways. The server's side is the same relay backwards: llama.cpp connects to a local
port, the relay does the handshake with the worker and carries the bytes.

The handshake (SHA-256 HMACs, 32-byte random nonces):
    worker -> client   MAGIC + nonce_w
    client -> worker   nonce_c + HMAC(key, "client" + nonce_w + nonce_c)
    worker -> client   HMAC(key, "worker" + nonce_c + nonce_w)         (only if the client's proof holds)
    client -> worker   RELAY or STATUS (the worker answers one JSON line, and closes)
    worker -> client   (to RELAY) TAKEN, then ggml's own protocol; or BUSY (another client has it), and closes
A client that fails, or has not finished within HANDSHAKE_SECONDS, is closed before a byte reaches ggml. The
bytes after it are not encrypted: the key keeps strangers out, it does not hide the model's activations.
Connections across the network have TCP keep-alives of a few seconds, so a worker that drops off the
network ends its connection (and the model using it sees a lost worker) instead of hanging it.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time

log = logging.getLogger("edge_server.rpc_relay")

MAGIC = b"EDGE-RPC/1\n"
NONCE = 32
HANDSHAKE_SECONDS = 5.0  # the whole handshake, not each read
MAX_HANDSHAKES = 16  # connections a worker lets prove themselves at once
MAX_PER_ADDRESS = 4  # of those, from one address: a stranger cannot take all the places
CONNECT_TRIES = 3  # the server's tries to reach a worker (a stranger may hold its handshake places a moment)
RELAY, STATUS = b"R", b"S"
TAKEN, BUSY = b"+", b"-"
_CHUNK = 1 << 16
KEEPALIVE = (3, 1, 3)  # seconds idle before probing, seconds between probes, probes unanswered: ~6 s to notice
UNACKED_MS = 10_000  # data sent and not acknowledged for this long (the peer is gone mid-exchange) ends it too


def keep_alive(sock: socket.socket) -> None:
    """Probe an idle connection so a peer gone from the network (no reset ever comes) ends it in seconds."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for name, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"),
                           (*KEEPALIVE, UNACKED_MS)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _proof(key: str, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), role + first + second, hashlib.sha256).digest()


def _read_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    """n bytes, all by `deadline` (time.monotonic()): a client trickling a byte at a time gets no longer."""
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the handshake took too long")
        sock.settimeout(left)
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("closed during the handshake")
        data += part
    return data


def admit(sock: socket.socket, key: str) -> bytes | None:
    """The worker's side of the handshake on an accepted connection: what the client wants (RELAY or
    STATUS) once it proved the key, else None. All of it within HANDSHAKE_SECONDS."""
    deadline = time.monotonic() + HANDSHAKE_SECONDS
    try:
        ours = secrets.token_bytes(NONCE)
        sock.settimeout(HANDSHAKE_SECONDS)
        sock.sendall(MAGIC + ours)
        theirs = _read_exactly(sock, NONCE, deadline)
        if not hmac.compare_digest(_read_exactly(sock, 32, deadline), _proof(key, b"client", ours, theirs)):
            return None
        sock.sendall(_proof(key, b"worker", theirs, ours))
        mode = _read_exactly(sock, 1, deadline)
        return mode if mode in (RELAY, STATUS) else None
    except (OSError, ConnectionError):
        return None
    finally:
        sock.settimeout(None)


def prove(sock: socket.socket, key: str, mode: bytes = RELAY, seconds: float = HANDSHAKE_SECONDS) -> None:
    """The client's side of the handshake on a connection to a worker, then what it wants (`mode`), within
    `seconds`; raises PermissionError when the worker does not speak it or does not hold the key
    (ConnectionError when it closes, TimeoutError when it is too slow)."""
    deadline = time.monotonic() + seconds
    try:
        if _read_exactly(sock, len(MAGIC), deadline) != MAGIC:
            raise PermissionError("not an edge-server worker")
        theirs, ours = _read_exactly(sock, NONCE, deadline), secrets.token_bytes(NONCE)
        sock.sendall(ours + _proof(key, b"client", theirs, ours))
        try:
            answer = _read_exactly(sock, 32, deadline)
        except ConnectionError:
            raise PermissionError("the worker closed the connection at our proof: it holds another key") from None
        if not hmac.compare_digest(answer, _proof(key, b"worker", ours, theirs)):
            raise PermissionError("the worker does not hold the key")
        sock.sendall(mode)
    finally:
        sock.settimeout(None)


class WorkerBusy(ConnectionError):
    """The worker serves another client (ggml's server takes one at a time)."""


def connect(worker: tuple[str, int], key: str, mode: bytes = RELAY, timeout: float = HANDSHAKE_SECONDS):
    """A connection to `worker` that has passed the handshake and, for RELAY, holds the worker (raises
    OSError, PermissionError, WorkerBusy)."""
    sock = socket.create_connection(worker, timeout=timeout)
    try:
        keep_alive(sock)
        prove(sock, key, mode, timeout)
        if mode == RELAY and _read_exactly(sock, 1, time.monotonic() + timeout) != TAKEN:
            raise WorkerBusy("the worker is in use by another model (another server's?)")
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def ask_status(worker: tuple[str, int], key: str, timeout: float = 2.0) -> dict:
    """The worker's own account of itself (free memory, threads, version); raises OSError, PermissionError
    or ValueError when it cannot be had."""
    with connect(worker, key, STATUS, timeout) as sock:
        sock.settimeout(timeout)
        data = b""
        while not data.endswith(b"\n") and len(data) < _CHUNK:
            part = sock.recv(4096)
            if not part:
                break
            data += part
    said = json.loads(data)
    if not isinstance(said, dict):
        raise ValueError("the worker's status is not an object")
    return said


def _pump(source: socket.socket, sink: socket.socket, carried=None) -> None:
    """Carry one direction; its end is passed on (a half close), a failure ends both directions.
    carried(n) is told the size of each piece carried."""
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
            if carried:
                carried(len(data))
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(a: socket.socket, b: socket.socket, a_to_b=None, b_to_a=None) -> None:
    """Carry bytes both ways until either side closes, then close both (a_to_b, b_to_a: see _pump)."""
    other = threading.Thread(target=_pump, args=(b, a, b_to_a), daemon=True)
    other.start()
    _pump(a, b, a_to_b)
    other.join()
    a.close()
    b.close()


class Relay:
    """Listens on (host, port); each connection is handed to `handle(sock)` on its own thread."""

    def __init__(self, host: str, port: int, handle):
        self._listener = socket.create_server((host, port))
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
            try:
                threading.Thread(target=self._handle, args=(sock,), daemon=True).start()
            except RuntimeError:  # no thread to be had: this one is closed, the listener goes on
                sock.close()

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        except OSError:
            pass
        self._listener.close()


class Traffic:
    """What a worker's relay carried: connections open, bytes each way, and round trips (an answer after a
    request: a ggml command that waits for its reply)."""

    def __init__(self):
        self.clients = self.bytes_in = self.bytes_out = self.round_trips = 0
        self._asked = False  # bytes came in since the last that went out
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """Take the worker for one client: False if one has it (ggml serves one at a time)."""
        with self._lock:
            if self.clients:
                return False
            self.clients = 1
            return True

    def release(self) -> None:
        with self._lock:
            self.clients = 0

    def received(self, n: int) -> None:
        with self._lock:
            self._asked = True
            self.bytes_in += n

    def sent(self, n: int) -> None:
        with self._lock:
            self.bytes_out += n
            self.round_trips += self._asked
            self._asked = False

    def counts(self) -> dict:
        return {"bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "round_trips": self.round_trips}


def worker_side(host: str, port: int, target: tuple[str, int], key: str, status=dict,
                traffic: Traffic | None = None) -> Relay:
    """The worker's listener on the LAN: admitted connections are relayed to ggml's RPC server at `target`
    (on loopback), or answered with `status()`; the rest are closed having reached nothing. At most
    MAX_HANDSHAKES connections are in the handshake at once (more are closed at once). `traffic` counts
    what is relayed."""
    traffic = traffic or Traffic()
    handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
    per_address: dict[str, int] = {}
    places = threading.Lock()
    warned = [0.0]

    def take_place(address: str) -> bool:
        with places:
            if per_address.get(address, 0) >= MAX_PER_ADDRESS or not handshakes.acquire(blocking=False):
                return False
            per_address[address] = per_address.get(address, 0) + 1
            return True

    def give_place(address: str) -> None:
        with places:
            per_address[address] -= 1
            if not per_address[address]:
                del per_address[address]
            handshakes.release()

    def warn(message: str) -> None:  # at most one line every 10 s, whatever a stranger sends
        if time.monotonic() - warned[0] > 10:
            warned[0] = time.monotonic()
            log.warning("%s", message)

    def handle(sock: socket.socket) -> None:
        try:
            address = sock.getpeername()[0]
        except OSError:
            sock.close()
            return
        if not take_place(address):
            warn(f"refused connections to the worker: too many handshakes at once (from {address}?)")
            sock.close()
            return
        try:
            keep_alive(sock)
            mode = admit(sock, key)
        finally:
            give_place(address)
        if mode is None:
            warn("refused a connection to the worker: no proof of the key")
            sock.close()
            return
        if mode == STATUS:
            try:
                sock.sendall(json.dumps(status()).encode() + b"\n")
            except OSError:
                pass
            sock.close()
            return
        if not traffic.claim():  # a second client would hang in ggml's queue: refused instead
            warn("refused a second client: a model already uses this worker")
            try:
                sock.sendall(BUSY)
            except OSError:
                pass
            sock.close()
            return
        try:
            upstream = socket.create_connection(target)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(TAKEN)
        except OSError as exc:
            traffic.release()
            log.warning("the RPC server at %s:%d does not answer: %s", *target, exc)
            sock.close()
            return
        try:
            relay(sock, upstream, traffic.received, traffic.sent)
        finally:
            traffic.release()

    return Relay(host, port, handle)


def _from_this_process(sock: socket.socket) -> bool:
    """Whether the peer of an accepted loopback connection is a socket of this very process, from Linux's
    /proc: another program on this device must not borrow our end of the handshake. True where /proc does
    not tell (Android keeps /proc/net from apps)."""
    mine, theirs = sock.getsockname()[1], sock.getpeername()[1]
    found = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        found = found or False
        for row in rows:
            if int(row[1].rsplit(":", 1)[1], 16) == theirs and int(row[2].rsplit(":", 1)[1], 16) == mine:
                return f"socket:[{row[9]}]" in _open_files()
    return found is None


def _open_files() -> set[str]:
    """What this process's file descriptors point at (Linux /proc)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile (the listing's own)
            pass
    return found


def address(worker: tuple[str, int]) -> str:
    """host:port, an IPv6 host in brackets."""
    host, port = worker
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_side(worker: tuple[str, int], key: str, refused=lambda why: None) -> Relay:
    """A loopback port for llama.cpp's RPC client in this process: each connection to it is carried to `worker`
    after the handshake. A worker that fails it, or is busy, gets nothing, `refused(why)` is told, and the local
    connection is closed; a connection from another process is closed at once."""

    def handle(sock: socket.socket) -> None:
        if not _from_this_process(sock):
            log.warning("refused a local connection to a worker's relay from another process")
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for attempt in range(CONNECT_TRIES):
            try:
                upstream = connect(worker, key)
                break
            except (PermissionError, WorkerBusy) as exc:
                why = f"worker {address(worker)} refused: {exc}"
            except ConnectionError as exc:  # refused, or closed at once (its handshake places taken): again
                why = f"worker {address(worker)} is unreachable: {exc}"
                if attempt + 1 < CONNECT_TRIES:
                    time.sleep(0.5)
                    continue
            except OSError as exc:
                why = f"worker {address(worker)} is unreachable: {exc}"
            log.warning("%s", why)
            refused(why)
            sock.close()
            return
        relay(sock, upstream)

    return Relay("127.0.0.1", 0, handle)
