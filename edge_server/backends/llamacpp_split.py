"""The llama-cpp backend when the server has workers: a model is split across this device and the workers
that answer, by their free memory, and runs in a child process (model_host.py).

llama.cpp places whole layers: this device keeps the embeddings, the output layer and as many of the first
blocks as its share of the free memory holds (counted in bytes, from the GGUF's tensor table); the workers
get the rest, in proportion to their free memory (the RPC devices act as GPUs: n_gpu_layers and
tensor_split). A model with a vision projector, or one that no worker is free for, loads here as usual.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from ..memory import available_memory
from . import model_host
from .base import TEXT
from .gguf_header import LIBRARIES, block_sizes
from .llamacpp import LlamaCppBackend
from .rpc_relay import address
from .worker_list import WorkerList

log = logging.getLogger("edge_server.split")
FITS = 0.75  # a model whose weights take at most this part of the free memory here runs here (EDGE_SPLIT=auto)


@dataclass(frozen=True)
class Plan:
    workers: list[tuple[str, int]]  # those used, in the order of their devices
    shares: list[int]  # free bytes of each, which tensor_split is made of
    local_layers: int  # blocks this device keeps (the first ones)
    layers: int
    local_bytes: int  # the weights this device keeps: its blocks, the embeddings and the output layer

    @property
    def addresses(self) -> list[str]:
        return [address(worker) for worker in self.workers]


class SplitBackend(LlamaCppBackend):
    def __init__(self, workers: WorkerList, meminfo: str = "/proc/meminfo"):
        self.workers, self.meminfo = workers, meminfo
        self._checked: dict[str, Plan | None] = {}  # the plan each model's memory check counted

    def plan(self, model_path: Path) -> Plan | None:
        """How the model would be split now, or None to load it here alone: this device keeps the most
        blocks that leave its part of the weights no larger than its part of the free memory. Unless the
        workers are for every model (EDGE_SPLIT=always), a model whose weights take at most FITS of this
        device's free memory is not split: it runs faster here, and leaves the workers to a big one."""
        blocks, rest = block_sizes(model_path)
        here, total = available_memory(self.meminfo) or 0, rest + sum(blocks)
        if not blocks or (not self.workers.always and total <= here * FITS):
            return None
        usable, seen = [], set()
        for worker, said in zip(self.workers.workers, self.workers.survey()):
            if said["state"] == "up" and isinstance(said.get("free_bytes"), int) and said["free_bytes"] > 0 \
                    and said.get("id") not in seen:  # one worker listed under two names is used once
                usable.append((worker, said))
                seen.add(said.get("id"))
        if not usable:
            return None
        shares = [said["free_bytes"] for _, said in usable]
        room = total * here / (here + sum(shares))
        local, kept = 0, rest
        while local < len(blocks) and kept + blocks[local] <= room:
            kept += blocks[local]
            local += 1
        if local == len(blocks):
            return None
        return Plan([w for w, _ in usable], shares, local, len(blocks), kept)

    def _say_why(self, model_path: Path, plan: Plan | None) -> None:
        """Log why the model is not split, or which workers it is not split over."""
        if plan is None and not self.workers.always and self._fits(model_path):
            log.info("%s fits in this device's memory: not split (EDGE_SPLIT=always splits every model)",
                     model_path.name)
        elif unused := [w for w in self.workers.survey() if plan is None or w["address"] not in plan.addresses]:
            log.warning("%s: not split over %s", model_path.name,
                        "; ".join(f"{w['address']} ({w['state']}{': ' + w['error'] if w.get('error') else ''})"
                                  for w in unused))

    def _fits(self, model_path: Path) -> bool:
        blocks, rest = block_sizes(model_path)
        return rest + sum(blocks) <= (available_memory(self.meminfo) or 0) * FITS

    def memory_needs(self, model_path: Path, mmproj_path: Path | None = None):
        needs = super().memory_needs(model_path, mmproj_path)
        plan = self._checked[str(model_path)] = None if mmproj_path else self.plan(model_path)
        if plan is None:
            return needs
        share = plan.local_layers / plan.layers  # of the KV cache, which is per layer; its child maps the libraries
        return dataclasses.replace(needs, weights=plan.local_bytes, cache_per_token=int(needs.cache_per_token * share),
                                   window_cache_per_token=int(needs.window_cache_per_token * share),
                                   fixed=needs.fixed + LIBRARIES)

    def load(self, model_path: Path, *, n_ctx: int, mmproj_path: Path | None = None,
             chat_handler: str | None = None, n_threads: int | None = None, kind: str = TEXT,
             device: str | None = None, parallel: int = 1):
        plan = None if mmproj_path else self.plan(model_path)
        checked = self._checked.pop(str(model_path), None)
        if checked is not None and (plan is None or plan.local_layers > checked.local_layers):
            # The memory check counted a smaller part here: a worker left or was taken since.
            raise RuntimeError(f"the workers changed since the memory check ({', '.join(checked.addresses)} were "
                               f"free, now {'none is' if plan is None else ', '.join(plan.addresses) + ' are'}): "
                               "launch it again")
        if not mmproj_path:  # a model with images is read here, whatever the workers
            self._say_why(model_path, plan)
        if plan is None:
            return super().load(model_path, n_ctx=n_ctx, mmproj_path=mmproj_path, chat_handler=chat_handler,
                                n_threads=n_threads, kind=kind, device=device, parallel=parallel)
        log.info("splitting %s: %d of %d blocks here, the rest over %s", model_path.name, plan.local_layers,
                 plan.layers, ", ".join(plan.addresses))
        order = {"path": str(model_path), "n_ctx": n_ctx, "n_threads": n_threads, "parallel": parallel,
                 # llama.cpp offloads the last n_gpu_layers, the output layer counted (it is kept here anyway)
                 "workers": plan.workers, "key": self.workers.key, "n_gpu_layers": plan.layers + 1 - plan.local_layers,
                 "split": [float(share) for share in plan.shares]}
        try:
            return model_host.start(order, plan.addresses, on_close=self.workers.forget)
        finally:
            self.workers.forget()
