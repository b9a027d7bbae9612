"""The child process that holds a model split across workers (model_host.py starts it).

ggml's RPC client aborts its process when a worker dies or drops off the network: here that ends this
process only, and the server sees the connection close. Run as `python -m edge_server.backends.model_host_child
FD`, FD being its end of a socket pair. The first message is the load; then it answers the server's
requests, stepping every stream in turn as the server's engine does (engine.py), so they batch.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Generator

from ..memory import resident_memory
from .base import Prepared


def _load(order: dict, refused):
    from . import ggml_rpc, rpc_relay
    from .llamacpp import LlamaCppBackend

    # llama.cpp connects to local ends of the authenticated relay, one per worker (rpc_relay.py). A worker that
    # refuses is told to the server before llama.cpp, finding its connection closed, aborts this process.
    ends = [rpc_relay.server_side(tuple(worker), order["key"], refused) for worker in order["workers"]]
    ggml_rpc.add_devices([f"127.0.0.1:{end.port}" for end in ends])
    # The output layer stays here: on a worker, every token's logits (the vocabulary's size in floats, 1 MB on
    # Gemma 3) would cross the network, where a layer's output is a few KB. Tied embeddings name it token_embd.
    here = ggml_rpc.on_this_cpu(r"^(output|token_embd)\.weight$")
    model = LlamaCppBackend().load(order["path"], n_ctx=order["n_ctx"], n_threads=order["n_threads"],
                                   parallel=order["parallel"],
                                   offload={"n_gpu_layers": order["n_gpu_layers"], "tensor_split": order["split"],
                                            "tensor_buft_overrides": here})
    list(model.warm_up())
    return model


TICK_SECONDS = 1.0  # a stream reading its prompt says it is alive this often (model_host.STALL_SECONDS)


@dataclass
class _Stream:
    prepared: Prepared
    pieces: Generator[str, None, None]
    said: float = 0.0  # when the server last heard of it


class Host:
    def __init__(self, model, conn: Connection, send):
        self.model, self.conn, self.send = model, conn, send
        self.streams: dict[int, _Stream] = {}

    def counters(self) -> dict:
        return {"cache_used": self.model.cache_used, "prompt_tokens": self.model.prompt_tokens}

    def run(self) -> None:
        while True:
            try:
                if not self.streams:
                    self.handle(self.conn.recv())
                while self.conn.poll():
                    self.handle(self.conn.recv())
            except (EOFError, OSError):
                return  # the server is gone, or closed us
            for ident, stream in list(self.streams.items()):
                self.step(ident, stream)

    def step(self, ident: int, stream: _Stream) -> None:
        try:
            piece = next(stream.pieces)
        except StopIteration:
            del self.streams[ident]
            self.send(("end", ident, stream.prepared.generated, self.counters()))
        except Exception as exc:
            del self.streams[ident]
            self.send(("error", ident, f"{type(exc).__name__}: {exc}"))
        else:
            now = time.monotonic()
            if piece:
                self.send(("piece", ident, piece, stream.prepared.generated))
            elif now - stream.said > TICK_SECONDS:
                self.send(("tick", ident))
            else:
                return
            stream.said = now

    def handle(self, message: tuple) -> None:
        kind, ident, *args = message
        if kind == "close":
            raise EOFError
        if kind == "cancel":
            stream = self.streams.pop(ident, None)
            if stream is not None:
                stream.pieces.close()
            return
        if kind == "stream":
            n_tokens, payload, stop, options = args
            prepared = Prepared(n_tokens, payload, stop)
            self.streams[ident] = _Stream(prepared, iter(self.model.stream(prepared, options)))
            return
        try:
            prepared = self.model.prepare(*args) if kind == "prepare" else self.model.prepare_raw(*args)
        except Exception as exc:
            self.send(("failed", ident, f"{exc}"))
        else:
            self.send(("prepared", ident, prepared.n_tokens, prepared.payload, prepared.stop))


def main(fd: int) -> None:
    # No PR_SET_PDEATHSIG here: it follows the thread that started us (a request's), not the server. When the
    # server goes, the socket pair closes and the next recv or send ends this process.
    conn, lock = Connection(fd), threading.Lock()

    def send(message: tuple) -> None:  # the relays' threads tell of a refusal too
        with lock:
            conn.send(message)

    try:
        model = _load(conn.recv(), lambda why: send(("failed", 0, why)))
    except Exception as exc:
        send(("failed", 0, f"{exc}"))
        return
    send(("ready", 0, {"n_ctx": model.n_ctx, "parallel": model.parallel, "memory": resident_memory(),
                       "capabilities": sorted(model.capabilities)}))
    host = Host(model, conn, send)
    try:
        host.run()
    finally:
        for stream in host.streams.values():
            stream.pieces.close()
        model.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
