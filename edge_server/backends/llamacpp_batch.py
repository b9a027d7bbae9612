"""Continuous batching for llama.cpp: the streams of one model share each llama_decode.

Each stream holds a sequence (a seq_id with its own part of the KV cache). A stream queues what it
needs decoded next (a piece of its prompt, or the token it just sampled) and then asks for it to be
decoded; the first stream to ask decodes everything queued, its own and the others', in one batch.
The engine steps streams in turn, so in a round every stream samples from the logits of one shared
decode and queues its next token before the round comes back to the first. Decoding is bound by
memory bandwidth on phone and Pi CPUs: four tokens in one decode cost little more than one.

A new stream's prompt is read in pieces that ride along with the others' tokens, so a long prompt
never holds the rest for its whole length. A decode waits while any stream still has logits it has
not sampled from (a decode overwrites them). Everything here runs on the engine thread only.
"""
from __future__ import annotations

import time
from typing import Iterator

PIECE_SECONDS = 0.1  # a decode with prompt in it takes about this long: the bound on others' waits and on cancel
REPEAT_WINDOW = 64  # tokens the repeat penalty looks back over, as llama-cpp-python's default


class Sequence:
    """One stream's place in the KV cache."""

    def __init__(self, seq_id: int):
        self.id = seq_id
        self.tokens: list[int] = []  # what the cache holds for this sequence, in order
        self.pending: list[int] = []  # queued for the next decode
        self.wants_logits = False  # for the last pending token
        self.row: int | None = None  # where its logits are in the last decode, until it samples
        self.busy = False
        self.reading = False  # what it has queued is a piece of its prompt
        self.used = 0  # when it was last claimed: the least recently used goes to a newcomer
        self.failed: BaseException | None = None


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Batch:
    """The sequences of one llama.cpp context and the decodes they share."""

    def __init__(self, lib, ctx, n_seq: int, capacity: int):
        self._lib, self._ctx = lib, ctx
        self._memory = lib.llama_get_memory(ctx)
        self.capacity = capacity  # tokens one decode may hold (the context's n_batch)
        self._batch = lib.llama_batch_init(capacity, 0, 1)
        self.sequences = [Sequence(i) for i in range(n_seq)]
        self._clock = 0
        self.piece = 64  # prompt tokens per piece; adapts to the measured speed
        self._speed = 640.0  # tokens per second of the last decode that read a prompt piece
        self.prompt_evaluated = 0  # prompt tokens decoded over the model's life
        self.prompt_reused = 0  # prompt tokens found already in a sequence's cache
        self._lent = False  # the cache was lent out (to the vision path): its contents are unknown

    def claim(self, prompt: list[int]) -> Sequence:
        """A free sequence for `prompt`, its cache cut back to the prefix it shares with the prompt.

        The choice saves the most work: the tokens kept minus those dropped (which another chat's next turn
        would read again); of equals, the least recently used. A follow-up turn so finds its own chat's
        sequence, and a new chat takes an empty one rather than one whose cache begins like its prompt."""
        if self._lent:
            self.reset()
        free = [s for s in self.sequences if not s.busy]
        shared = {s.id: min(common_prefix(s.tokens, prompt), len(prompt) - 1) for s in free}
        seq = max(free, key=lambda s: (2 * shared[s.id] - len(s.tokens), -s.used))
        keep = shared[seq.id]
        if keep < len(seq.tokens) and not self._lib.llama_memory_seq_rm(self._memory, seq.id, keep, -1):
            keep = 0  # this cache cannot drop a suffix: start the sequence over
            self._lib.llama_memory_seq_rm(self._memory, seq.id, 0, -1)
        del seq.tokens[keep:]
        self._clock += 1
        seq.busy, seq.used, seq.failed, seq.row, seq.pending, seq.reading = True, self._clock, None, None, [], False
        return seq

    def release(self, seq: Sequence) -> None:
        """The stream is over; its cache stays for the next prompt that begins the same way."""
        seq.busy, seq.row, seq.pending = False, None, []

    def reset(self) -> None:
        """Empty the cache and forget what every sequence held."""
        self._lib.llama_memory_clear(self._memory, True)
        self._lent = False
        for seq in self.sequences:
            seq.tokens.clear()

    def lend(self) -> bool:
        """Hand the whole cache to another user (the vision path, with no stream running); the next claim
        empties it. True when it was emptied now: what the other user thought it held is gone."""
        if self._lent:
            return False
        self.reset()
        self._lent = True
        return True

    def queue(self, seq: Sequence, tokens: list[int], logits: bool) -> None:
        seq.pending, seq.wants_logits = tokens, logits

    def ready(self, seq: Sequence) -> bool:
        """Whether `seq`'s queued tokens are decoded. If not, decode everything queued now, unless a stream
        still has logits to sample from: then False, and the caller yields to the engine and asks again."""
        if seq.failed is not None:
            raise seq.failed
        if not seq.pending:
            return True
        if any(s.row is not None for s in self.sequences):
            return False
        self._decode()
        if seq.failed is not None:
            raise seq.failed
        return not seq.pending

    def logits(self, seq: Sequence) -> int:
        """The batch index of `seq`'s logits, for one sampling; they are gone after the next decode."""
        row, seq.row = seq.row, None
        return row

    def read(self, seq: Sequence, prompt: list[int]) -> Iterator[str]:
        """Decode the prompt beyond what `seq` has cached, in pieces of about PIECE_SECONDS, yielding "" after
        each; the last piece leaves the logits the first token is sampled from."""
        start = len(seq.tokens)
        self.prompt_reused += start
        seq.reading = True
        room = max(16, self.capacity - len(self.sequences))  # the other streams' tokens ride along
        while True:
            size = min(self.piece, room, len(prompt) - start)
            last = start + size == len(prompt)
            self.queue(seq, prompt[start:start + size], logits=last)
            while not self.ready(seq):
                yield ""
            self.prompt_evaluated += size
            start += size
            if last:
                seq.reading = False
                return
            self.piece = max(16, min(room, int(self._speed * PIECE_SECONDS)))
            yield ""

    def _decode(self) -> None:
        """Decode one prompt piece (the longest waiting), then every sampled token, in one batch.

        llama.cpp splits a batch of several sequences into equal parts per sequence, and how a row is
        computed depends on where it falls: with the prompt piece first and alone, every row comes out
        bit for bit as when its stream runs by itself (measured on Gemma 3), so a greedy answer is the
        same text with or without company."""
        batch, n, members = self._batch, 0, []
        waiting = [s for s in self.sequences if s.busy and s.pending]
        reading = sorted((s for s in waiting if s.reading), key=lambda s: s.used)[:1]
        for seq in reading + [s for s in waiting if not s.reading]:
            base = len(seq.tokens)
            for i, token in enumerate(seq.pending):
                batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = token, base + i, 1, False
                batch.seq_id[n][0] = seq.id
                n += 1
            batch.logits[n - 1] = seq.wants_logits
            members.append((seq, n - 1))
        batch.n_tokens = n
        began = time.perf_counter()
        code = self._lib.llama_decode(self._ctx, batch)
        if n >= 16:
            self._speed = n / max(time.perf_counter() - began, 1e-4)
        if code != 0:
            error = RuntimeError(f"llama_decode failed with {code}")
            for seq, _ in members:  # whatever part went in is dropped; those streams end with the error
                self._lib.llama_memory_seq_rm(self._memory, seq.id, len(seq.tokens), -1)
                seq.pending, seq.failed = [], error
            return
        for seq, last in members:
            seq.tokens.extend(seq.pending)
            seq.pending, seq.row = [], last if seq.wants_logits else None

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
