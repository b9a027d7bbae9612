"""The authenticated relay that will stand in front of llama.cpp's RPC server on a worker (issue 22): real
sockets on loopback, with an echo server in ggml's place that records every connection it gets."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from edge_server.backends import rpc_relay

KEY = "family-secret"


class Echo:
    """ggml's RPC server stand-in: echoes bytes back, counts the connections that reach it."""

    def __init__(self):
        self.connections = 0
        self.listener = rpc_relay.Relay("127.0.0.1", 0, self._echo)
        self.address = (self.listener.host, self.listener.port)

    def _echo(self, sock):
        self.connections += 1
        with sock:
            while data := sock.recv(65536):
                sock.sendall(data)


@pytest.fixture
def worker():
    echo = Echo()
    relay = rpc_relay.worker_side("127.0.0.1", 0, echo.address, KEY)
    yield echo, relay
    relay.close()
    echo.listener.close()


def challenge(sock) -> bytes:
    """The worker's opening: MAGIC and its nonce."""
    return rpc_relay._read_exactly(sock, len(rpc_relay.MAGIC) + rpc_relay.NONCE, time.monotonic() + 10)


def roundtrip(port: int, payload: bytes) -> bytes:
    """What comes back for `payload` sent through a local end (b"" when it was closed on us)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while part := sock.recv(65536):
                received += part
        except (ConnectionResetError, BrokenPipeError):
            pass
    return received


def closed_without_a_byte(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_the_key_lets_bytes_through_both_ways(worker):
    echo, relay = worker
    local = rpc_relay.server_side(("127.0.0.1", relay.port), KEY)
    try:
        payload = bytes(range(256)) * 4096  # 1 MiB
        assert roundtrip(local.port, payload) == payload
        assert echo.connections == 1
    finally:
        local.close()


def test_a_wrong_key_reaches_nothing(worker):
    echo, relay = worker
    local = rpc_relay.server_side(("127.0.0.1", relay.port), "guessed")
    try:
        assert roundtrip(local.port, b"hello") == b""  # the local end is closed: the worker refused
        time.sleep(0.2)
        assert echo.connections == 0
    finally:
        local.close()


def test_a_client_without_the_handshake_is_closed_and_reaches_nothing(worker):
    echo, relay = worker
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.settimeout(10)
        assert challenge(sock).startswith(rpc_relay.MAGIC)
        sock.sendall(b"\x00" * 200)  # what ggml's RPC client would send: no proof
        assert closed_without_a_byte(sock)
    assert echo.connections == 0


def test_a_silent_client_is_closed_after_the_handshake_time(worker, monkeypatch):
    monkeypatch.setattr(rpc_relay, "HANDSHAKE_SECONDS", 0.5)
    echo, relay = worker
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        began = time.perf_counter()
        sock.settimeout(10)
        challenge(sock)
        assert closed_without_a_byte(sock)
        assert time.perf_counter() - began < 5
    assert echo.connections == 0


def test_a_fake_worker_without_the_key_gets_nothing_from_the_server(monkeypatch):
    """The worker proves the key too: something else listening at a worker's address is refused before
    llama.cpp's bytes (a model's weights, activations) go to it."""
    monkeypatch.setattr(rpc_relay, "HANDSHAKE_SECONDS", 1.0)
    echo = Echo()
    impostor = rpc_relay.worker_side("127.0.0.1", 0, echo.address, "another-key")
    received = []

    def listen_in(sock):  # an impostor that admits anyone and keeps what it is sent
        sock.sendall(rpc_relay.MAGIC + b"\x01" * rpc_relay.NONCE)
        sock.settimeout(5)
        try:
            while part := sock.recv(65536):
                received.append(part)
        except OSError:
            pass

    fake = rpc_relay.Relay("127.0.0.1", 0, listen_in)
    try:
        for address in (impostor.port, fake.port):
            local = rpc_relay.server_side(("127.0.0.1", address), KEY)
            try:
                assert roundtrip(local.port, b"weights") == b""
            finally:
                local.close()
        assert echo.connections == 0
        assert b"weights" not in b"".join(received)  # only the handshake's proof went out
    finally:
        impostor.close()
        fake.close()
        echo.listener.close()


def test_a_trickling_client_gets_no_more_than_the_handshake_time(worker, monkeypatch):
    """A byte every 0.3 s would keep each read alive: the handshake has one deadline for all of it."""
    monkeypatch.setattr(rpc_relay, "HANDSHAKE_SECONDS", 1.0)
    echo, relay = worker
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        began = time.perf_counter()
        challenge(sock)
        try:
            for _ in range(20):
                sock.sendall(b"\x00")
                time.sleep(0.3)
        except OSError:
            pass  # closed on us, as it should be
        assert closed_without_a_byte(sock)
        assert time.perf_counter() - began < 3
    assert echo.connections == 0


@pytest.fixture
def status_worker():
    """A worker whose STATUS is {"ok": true}, made in the test (after it patches the limits)."""
    made = []

    def make():
        echo = Echo()
        made.append((echo, rpc_relay.worker_side("127.0.0.1", 0, echo.address, KEY, status=lambda: {"ok": True})))
        return made[-1][1]

    yield make
    for echo, relay in made:
        relay.close()
        echo.listener.close()


def silent_handshakes(port: int, n: int) -> list[socket.socket]:
    """n connections that take a handshake place and say nothing after the challenge."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for sock in socks:
        challenge(sock)
    return socks


def test_handshakes_at_once_are_bounded_and_the_worker_stays_open(monkeypatch, status_worker):
    monkeypatch.setattr(rpc_relay, "MAX_HANDSHAKES", 2)
    relay = status_worker()
    silent = silent_handshakes(relay.port, 2)  # both in their handshake, saying nothing more
    with socket.create_connection(("127.0.0.1", relay.port)) as extra:
        extra.settimeout(10)
        assert closed_without_a_byte(extra)  # the third is closed at once, not queued
    for sock in silent:
        sock.close()
    deadline = time.monotonic() + 10
    while True:  # their places free up: a client with the key is served again
        try:
            assert rpc_relay.ask_status(("127.0.0.1", relay.port), KEY) == {"ok": True}
            break
        except (OSError, ConnectionError):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_worker_serves_one_client_and_says_so_to_the_next(worker):
    """ggml's server takes one client at a time: a second is told BUSY at once (it would hang in ggml's queue),
    and the server's local end reports why before it closes llama.cpp's connection."""
    echo, relay = worker
    first = rpc_relay.connect(("127.0.0.1", relay.port), KEY)
    try:
        with pytest.raises(rpc_relay.WorkerBusy):
            rpc_relay.connect(("127.0.0.1", relay.port), KEY)
        told = []
        local = rpc_relay.server_side(("127.0.0.1", relay.port), KEY, refused=told.append)
        try:
            assert roundtrip(local.port, b"hello") == b""
            assert len(told) == 1 and "in use by another model" in told[0]
        finally:
            local.close()
    finally:
        first.close()
    deadline = time.monotonic() + 10
    while True:  # the first gone, the next is served
        try:
            rpc_relay.connect(("127.0.0.1", relay.port), KEY).close()
            break
        except rpc_relay.WorkerBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_local_end_serves_only_its_own_process(worker):
    """Another program on the server's device must not borrow the local end, which proves the key for
    whoever connects (another Android app would otherwise reach the worker)."""
    echo, relay = worker
    local = rpc_relay.server_side(("127.0.0.1", relay.port), KEY)
    try:
        code = ("import socket, sys\n"
                "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
                "s.sendall(b'hello')\n"
                "try:\n    print(repr(s.recv(10)))\nexcept ConnectionResetError:\n    print(repr(b''))\n")
        other = subprocess.run([sys.executable, "-c", code, str(local.port)], capture_output=True, text=True,
                               timeout=60)
        assert other.stdout.strip() == "b''", other.stdout + other.stderr
        assert echo.connections == 0
        assert roundtrip(local.port, b"hello") == b"hello"  # this process: carried through
    finally:
        local.close()


def test_one_address_cannot_take_every_handshake_place(monkeypatch, status_worker):
    monkeypatch.setattr(rpc_relay, "MAX_PER_ADDRESS", 2)
    relay = status_worker()
    squatters = silent_handshakes(relay.port, 2)
    with socket.create_connection(("127.0.0.1", relay.port)) as third:  # the same address: refused
        assert closed_without_a_byte(third)
    with socket.socket() as other:  # another address (127.0.0.2 is loopback too): its handshake runs
        other.bind(("127.0.0.2", 0))
        other.connect(("127.0.0.1", relay.port))
        rpc_relay.prove(other, KEY, rpc_relay.STATUS)
        other.settimeout(10)
        assert other.recv(100) == b'{"ok": true}\n'
    for sock in squatters:
        sock.close()
