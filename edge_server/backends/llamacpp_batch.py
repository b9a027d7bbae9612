"""Continuous batching for llama.cpp: the streams of one model share each llama_decode and one pool of cache.

Each stream holds a sequence (a seq_id). A stream queues what it needs decoded (its prompt, or the token it
just sampled) and then asks for it to be decoded; the first stream to ask decodes everything queued, its
own and the others', in one batch. The engine steps streams in turn, so in a round every stream samples
from the logits of one shared decode and queues its next token before the round comes back to the first.
Decoding is bound by memory bandwidth on phone and Pi CPUs: four tokens in one decode cost little more
than one.

The sequences share one KV pool of n_ctx cells (llama.cpp's unified cache): a model costs the memory of
one context however many streams it runs, and one stream alone may fill all of it. What an idle sequence
holds (a chat's prefix, for its next turn) stays while there is room; when a decode needs the room, idle
sequences are emptied, least recently used first. If the streams running fill the pool, the youngest
give their cells back and read their text again later, when there is room; the oldest always goes on, so
every stream finishes. A prompt waits to be read until all of it fits.

Prompts are read in pieces that ride along with the others' tokens, so a long prompt never holds the rest
for its whole length; of several prompts, the shortest goes first. A decode waits while any stream still
has logits it has not sampled from (a decode overwrites them). Everything here runs on the engine thread.
"""
from __future__ import annotations

import time
from typing import Iterator

PIECE_SECONDS = 0.1  # a decode with prompt in it takes about this long: the bound on others' waits and on cancel
REPEAT_WINDOW = 64  # tokens the repeat penalty looks back over, as llama-cpp-python's default


class Sequence:
    """One stream's place in the KV pool."""

    def __init__(self, seq_id: int):
        self.id = seq_id
        self.tokens: list[int] = []  # what the cache holds for this sequence, in order
        self.todo: list[int] = []  # queued to be decoded after `tokens`
        self.wants_logits = False  # for the last token of `todo`
        self.row: int | None = None  # where its logits are in the last decode, until it samples
        self.busy = False
        self.reading = False  # `todo` is a prompt (or text given back to the pool, to read again)
        self.used = 0  # when it was last claimed: the oldest stream goes on, idle ones are emptied LRU
        self.failed: BaseException | None = None


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Batch:
    """The sequences of one llama.cpp context, the cache pool they share and the decodes they share."""

    def __init__(self, lib, ctx, n_seq: int, capacity: int, cells: int, window: int = 0):
        self._lib, self._ctx = lib, ctx
        self._memory = lib.llama_get_memory(ctx)
        self.capacity = capacity  # tokens one decode may hold (the context's n_batch)
        self.cells = cells  # the pool: tokens all sequences together may hold
        self.window = window  # the sliding window of the model's SWA layers, cached at that size (0: none)
        self._batch = lib.llama_batch_init(capacity, 0, 1)
        self.sequences = [Sequence(i) for i in range(n_seq)]
        self._clock = 0
        self.piece = 64  # prompt tokens per piece; adapts to the measured speed
        self._speed = 640.0  # tokens per second of the last decode that read a prompt piece
        self.prompt_evaluated = 0  # prompt tokens decoded over the model's life
        self.prompt_reused = 0  # prompt tokens found already in a sequence's cache
        self.evictions = 0  # idle sequences emptied, and running ones that gave their cells back
        self._lent = False  # the cache was lent out (to the vision path): its contents are unknown

    def claim(self, prompt: list[int]) -> Sequence:
        """A free sequence for `prompt`, its cache cut back to the prefix it shares with the prompt.

        The choice saves the most work: the tokens kept minus those dropped (which another chat's next turn
        would read again); of equals, the least recently used. A follow-up turn so finds its own chat's
        sequence, and a new chat takes an empty one rather than one whose cache begins like its prompt."""
        if self._lent:
            self.reset()
        free = [s for s in self.sequences if not s.busy]
        shared = {s.id: self._reusable(s, prompt) for s in free}
        seq = max(free, key=lambda s: (2 * shared[s.id] - len(s.tokens), -s.used))
        keep = shared[seq.id]
        if keep < len(seq.tokens) and not self._lib.llama_memory_seq_rm(self._memory, seq.id, keep, -1):
            keep = 0  # this cache cannot drop a suffix: start the sequence over
            self._lib.llama_memory_seq_rm(self._memory, seq.id, 0, -1)
        del seq.tokens[keep:]
        self._clock += 1
        seq.busy, seq.used, seq.failed, seq.row, seq.todo, seq.reading = True, self._clock, None, None, [], False
        return seq

    def _reusable(self, seq: Sequence, prompt: list[int]) -> int:
        """How much of `seq`'s cache `prompt` can start from. The last prompt token is always read (its logits
        are needed). A sliding-window cache keeps only the window before the sequence's end, so a cut inside
        it would leave the next token without the window it attends to: then nothing is reused."""
        keep = min(common_prefix(seq.tokens, prompt), len(prompt) - 1)
        return 0 if self.window and keep < len(seq.tokens) else keep

    def release(self, seq: Sequence) -> None:
        """The stream is over; its cache stays for the next prompt that begins the same way, while there is room."""
        seq.busy, seq.row, seq.todo, seq.reading = False, None, [], False

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
        seq.todo, seq.wants_logits = list(tokens), logits

    def ready(self, seq: Sequence) -> bool:
        """Whether `seq`'s queued tokens are decoded. If not, decode what is queued now, unless a stream
        still has logits to sample from: then False, and the caller yields to the engine and asks again."""
        if seq.failed is not None:
            raise seq.failed
        if not seq.todo:
            return True
        if any(s.row is not None for s in self.sequences):
            return False
        self._decode()
        if seq.failed is not None:
            raise seq.failed
        return not seq.todo

    def logits(self, seq: Sequence) -> int:
        """The batch index of `seq`'s logits, for one sampling; they are gone after the next decode."""
        row, seq.row = seq.row, None
        return row

    def read(self, seq: Sequence, prompt: list[int]) -> Iterator[str]:
        """Decode the prompt beyond what `seq` has cached, a piece per decode, yielding "" in between; the last
        piece leaves the logits the first token is sampled from."""
        self.prompt_reused += len(seq.tokens)
        self.queue(seq, prompt[len(seq.tokens):], logits=True)
        seq.reading = True  # until the decode that reads its last piece
        while not self.ready(seq):
            yield ""

    @property
    def held(self) -> int:
        """Cells of the pool in use: every sequence's cached tokens."""
        return sum(len(s.tokens) for s in self.sequences)

    def _decode(self) -> None:
        """Decode one prompt piece, then every sampled token, in one batch, making room in the pool first.

        llama.cpp computes a row differently depending on where it falls in a batch: with the prompt piece
        first and alone, the rows come out as when their stream runs by itself (measured on Gemma 3), but
        for the attention over the shared pool, which rounds differently now and then with other sequences'
        cells in it: a greedy answer is the same text with or without company almost always."""
        waiting = [s for s in self.sequences if s.busy and s.todo]
        tokens = sorted((s for s in waiting if not s.reading), key=lambda s: s.used)
        readers = sorted((s for s in waiting if s.reading), key=lambda s: (len(s.todo), s.used))
        if tokens:
            tokens = self._make_room(tokens, 0, spare=tokens[0])
        room = self.cells - self.held - len(tokens) + sum(len(s.tokens) for s in self.sequences if not s.busy)
        reader = next((r for r in readers if len(r.todo) <= room), None)
        oldest = min((s for s in self.sequences if s.busy), key=lambda s: s.used)
        if reader is None and not tokens and oldest in readers:  # the oldest goes first; the younger give way
            reader = oldest
        if reader is not None:
            tokens = self._make_room(tokens, len(reader.todo), spare=reader)
        free = self.cells - self.held
        tokens = tokens[:max(0, free)]  # a sampled token each; what does not fit waits for the older to end
        piece = min(self.piece, max(16, self.capacity - len(self.sequences)), len(reader.todo),
                    free - len(tokens)) if reader else 0
        if piece <= 0:
            reader = None
        if reader is None and not tokens:
            return  # the older streams end, or sample, first
        members, batch, n = [], self._batch, 0
        for seq, count in ([(reader, piece)] if reader else []) + [(s, len(s.todo)) for s in tokens]:
            base = len(seq.tokens)
            for i, token in enumerate(seq.todo[:count]):
                batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = token, base + i, 1, False
                batch.seq_id[n][0] = seq.id
                n += 1
            batch.logits[n - 1] = seq.wants_logits and count == len(seq.todo)
            members.append((seq, count, n - 1))
        batch.n_tokens = n
        began = time.perf_counter()
        code = self._lib.llama_decode(self._ctx, batch)
        if reader is not None and n >= 16:
            self._speed = n / max(time.perf_counter() - began, 1e-4)
        if code != 0:
            error = RuntimeError(f"llama_decode failed with {code}")
            for seq, _, _ in members:  # whatever part went in is dropped; those streams end with the error
                self._lib.llama_memory_seq_rm(self._memory, seq.id, len(seq.tokens), -1)
                seq.todo, seq.failed = [], error
            return
        for seq, count, last in members:
            seq.tokens.extend(seq.todo[:count])
            del seq.todo[:count]
            if seq is reader:
                self.prompt_evaluated += count
                if seq.todo:  # a long prompt: the next piece sized to take about PIECE_SECONDS
                    self.piece = max(16, int(self._speed * PIECE_SECONDS))
            seq.row = last if seq.wants_logits and not seq.todo else None
            seq.reading = seq.reading and bool(seq.todo)

    def _make_room(self, tokens: list[Sequence], extra: int, spare: Sequence) -> list[Sequence]:
        """Free the cells that `tokens`' queued tokens and `extra` more need: idle sequences are emptied first,
        least recently used first; then running streams younger than `spare` give back what they hold (and
        read it again later). Returns the streams of `tokens` that still decode now."""
        short = sum(len(s.todo) for s in tokens) + extra - (self.cells - self.held)
        if short > 0:
            short -= self._evict_idle(short)
        if short <= 0:
            return tokens
        younger = sorted((s for s in self.sequences if s.busy and s.tokens and s.used > spare.used),
                         key=lambda s: s.used, reverse=True)
        for seq in younger:
            if short <= 0:
                break
            if seq in tokens:
                tokens = [s for s in tokens if s is not seq]
                short -= len(seq.todo)
            short -= len(seq.tokens)
            self._give_back(seq)
        return tokens

    def _evict_idle(self, short: int) -> int:
        """Empty idle sequences, least recently used first, until `short` cells are free; the cells freed."""
        freed = 0
        for seq in sorted((s for s in self.sequences if not s.busy and s.tokens), key=lambda s: s.used):
            if freed >= short:
                break
            freed += len(seq.tokens)
            self._empty(seq)
        return freed

    def _give_back(self, seq: Sequence) -> None:
        """A running stream's cells go back to the pool; what they held is read again, as a prompt, when
        there is room (its sampler state and its text so far are untouched)."""
        seq.todo = seq.tokens + seq.todo
        self._empty(seq)
        seq.reading = True

    def _empty(self, seq: Sequence) -> None:
        self._lib.llama_memory_seq_rm(self._memory, seq.id, 0, -1)
        seq.tokens.clear()  # in place: a sampler reads the same list for its repeat window
        self.evictions += 1

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
