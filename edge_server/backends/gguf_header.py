"""Read a few metadata values from a GGUF header without loading the model (or llama.cpp)."""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, f):
        self.f = f

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        return self.f.read(self.unpack("Q")).decode("utf-8", "replace")

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            self.skip_array()
            return None
        raise ValueError(f"unknown GGUF value type {kind}")

    def skip_array(self) -> int:
        """Pass over an array without decoding it; its length."""
        item, count = self.unpack("I"), self.unpack("Q")
        if item in _SCALARS:
            self.f.seek(struct.calcsize("<" + _SCALARS[item]) * count, 1)
        elif item == _STRING:  # a tokenizer's vocabulary: 262,144 strings for Gemma 3
            for _ in range(count):
                self.f.seek(self.unpack("Q"), 1)
        else:
            for _ in range(count):
                self.value(item)
        return count


def _begin(f, path: Path) -> tuple[_Reader, int, int]:
    """A reader past the file's magic and version; its tensor count and metadata count."""
    reader = _Reader(f)
    if f.read(4) != b"GGUF" or reader.unpack("I") < 2:
        raise ValueError(f"{path} is not a GGUF v2+ file")
    return reader, reader.unpack("Q"), reader.unpack("Q")


def context_length(path: Path) -> int | None:
    """Return `<architecture>.context_length`, reading only as far as needed."""
    with open(path, "rb") as f:
        reader, _, n_kv = _begin(f, path)
        arch, lengths = None, {}
        for _ in range(n_kv):
            key, value = reader.string(), reader.value(reader.unpack("I"))
            if key == "general.architecture":
                arch = value
            elif key.endswith(".context_length"):
                lengths[key] = value
            if arch and f"{arch}.context_length" in lengths:
                return int(lengths[f"{arch}.context_length"])
    return None


def _metadata(path: Path, wanted, counted: tuple[str, ...] = ()) -> dict:
    """The header values whose keys `wanted(key)` accepts (arrays of numbers are read too), and the length of
    the arrays named in `counted` (under their key + ".count")."""
    found = {}
    with open(path, "rb") as f:
        reader, _, n_kv = _begin(f, path)
        for _ in range(n_kv):
            key, kind = reader.string(), reader.unpack("I")
            if kind == _ARRAY and key in counted:
                found[key + ".count"] = reader.skip_array()
            elif kind == _ARRAY and wanted(key):
                item, count = reader.unpack("I"), reader.unpack("Q")
                found[key] = [reader.value(item) for _ in range(count)]
            else:
                value = reader.value(kind)
                if wanted(key):
                    found[key] = value
    return found


def block_sizes(path: Path) -> tuple[tuple[int, ...], int]:
    """The bytes of each transformer block's weights (blk.N.*), and of the rest (embeddings, output), from the
    tensor table: what a split across devices moves, block by block. Read once per file (a launch asks for
    them two or three times, and the read passes over the whole vocabulary: 0.1-0.2 s on Gemma 3)."""
    stat = path.stat()
    return _block_sizes(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _block_sizes(path: Path, size: int, mtime_ns: int) -> tuple[tuple[int, ...], int]:
    with open(path, "rb") as f:
        reader, tensors, n_kv = _begin(f, path)
        alignment = 32
        for _ in range(n_kv):
            key, value = reader.string(), reader.value(reader.unpack("I"))
            if key == "general.alignment" and isinstance(value, int) and value > 0:
                alignment = value
        table = []
        for _ in range(tensors):
            name = reader.string()
            f.seek(8 * reader.unpack("I") + 4, 1)  # its dimensions, its type
            table.append((reader.unpack("Q"), name))
        data = -(-f.tell() // alignment) * alignment
    table.sort()
    ends = [offset for offset, _ in table[1:]] + [size - data]
    blocks: dict[int, int] = {}
    rest = 0
    for (offset, name), end in zip(table, ends):
        if name.startswith("blk.") and name.split(".")[1].isdigit():
            index = int(name.split(".")[1])
            blocks[index] = blocks.get(index, 0) + end - offset
        else:
            rest += end - offset
    return tuple(blocks.get(i, 0) for i in range(max(blocks, default=-1) + 1)), rest


# Of every so many layers, all but one attend over a sliding window, where the header does not say
# (llama.cpp's defaults, per architecture).
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "gemma-embedding": 6, "cohere2": 4, "llama4": 4,
                "olmo2": 4, "exaone4": 4, "gpt-oss": 2}
UBATCH = 512  # llama-cpp-python's n_ubatch: the tokens of one compute step
RUNTIME = 6 << 20  # a context's own, whatever the model (measured: 5 to 7 MB on a tiny model)
LIBRARIES = 19 << 20  # llama.cpp's libraries, mapped once per process at the first load (measured)
BYTES_PER_WORD = 144  # the vocabulary as llama.cpp holds it (strings, scores, lookups), per token


def _pad(n: int, block: int = 256) -> int:
    return -(-n // block) * block


@dataclass(frozen=True)
class MemoryNeeds:
    """What a llama.cpp model takes in memory, in bytes, at a context size: the weights, one KV pool of n_ctx
    cells shared by every stream, the sliding-window layers' cache at the window's size, compute buffers."""
    weights: int  # the model file (and projector), mapped and read in full while it runs
    cache_per_token: int  # the KV cache of the layers that attend over the whole context, per cell
    work_per_token: int  # llama.cpp's compute buffers grow with the context too
    window: int = 0  # the sliding window of the other layers (0: none)
    window_cache_per_token: int = 0  # the KV cache of the sliding-window layers, per cell
    fixed: int = RUNTIME  # llama.cpp's context, the vocabulary, a step's activations
    layers: int = 0  # transformer blocks (a model split across devices is split by them)

    def cache(self, n_ctx: int, parallel: int = 1) -> int:
        """The KV caches llama.cpp allocates: the window's cells per stream, and a step's, as it sizes them."""
        window_cells = min(n_ctx, _pad(self.window * parallel + UBATCH)) if self.window else 0
        return n_ctx * self.cache_per_token + window_cells * self.window_cache_per_token

    def at(self, n_ctx: int, parallel: int = 1) -> int:
        return self.weights + self.fixed + self.cache(n_ctx, parallel) + n_ctx * self.work_per_token

    def largest_context(self, available: int, parallel: int = 1, step: int = 256) -> int:
        """The largest multiple of `step` whose needs fit in `available` (0 if none)."""
        low, high = 0, max(0, available // step)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.at(mid * step, parallel) <= available else (low, mid - 1)
        return low * step


def memory_needs(path: Path, extra_files: int = 0) -> MemoryNeeds:
    """Estimate from the header: layers, KV heads and their sizes (an f16 cache, as llama-cpp-python uses),
    and which layers attend over a sliding window."""
    meta = _metadata(path, lambda key: key == "general.architecture" or ".attention." in key
                     or key.endswith((".block_count", ".embedding_length")), counted=("tokenizer.ggml.tokens",))
    arch = meta.get("general.architecture", "")
    layers = int(meta.get(f"{arch}.block_count") or 0)
    embedding = int(meta.get(f"{arch}.embedding_length") or 0)
    heads = meta.get(f"{arch}.attention.head_count") or 1
    heads_kv = meta.get(f"{arch}.attention.head_count_kv") or heads
    per_layer = [int(n) for n in heads_kv] if isinstance(heads_kv, list) else [int(heads_kv)] * layers
    heads_max = max(heads) if isinstance(heads, list) else heads
    key = int(meta.get(f"{arch}.attention.key_length") or embedding // max(1, heads_max))
    value = int(meta.get(f"{arch}.attention.value_length") or key)
    window = int(meta.get(f"{arch}.attention.sliding_window") or 0)
    sliding = _sliding_layers(meta.get(f"{arch}.attention.sliding_window_pattern"), SWA_PATTERNS.get(arch), layers)
    if not window or not any(sliding):
        window, sliding = 0, [False] * layers
    per_cell = lambda swa: sum(n for n, s in zip(per_layer, sliding) if s == swa) * (key + value) * 2  # noqa: E731
    # Compute buffers: llama.cpp reserves them for a whole step of 512 tokens (514 MB on Gemma 3, most of it
    # logits for every token), but a step only writes the few outputs it asks for and its activations, and
    # only pages written take memory. Measured (bench/memory.py): within 3 % on Gemma 3 270M.
    activations = UBATCH * embedding * 4 * 8
    words = int(meta.get("tokenizer.ggml.tokens.count") or 0)
    return MemoryNeeds(path.stat().st_size + extra_files, per_cell(False), 4 * heads_max, window, per_cell(True),
                       fixed=RUNTIME + words * BYTES_PER_WORD + activations, layers=layers)


def _sliding_layers(pattern, default: int | None, layers: int) -> list[bool]:
    """Which layers attend over the sliding window: the header's list, or every layer but each n-th."""
    if isinstance(pattern, list):
        return [bool(x) for x in pattern[:layers]] + [False] * (layers - len(pattern))
    n = int(pattern) if isinstance(pattern, int) and pattern > 0 else default
    if not n:
        return [False] * layers
    return [(i + 1) % n != 0 for i in range(layers)]


# llama.cpp's llama_ftype: what general.file_type says about how the weights are quantized.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
              26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
              36: "TQ1_0", 37: "TQ2_0"}


def _human_count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else str(n)


def describe(path: Path) -> dict:
    """What a model list shows: architecture, parameter count (summed over the tensor infos), quantization,
    trained context and chat template. Unreadable files give {}."""
    try:
        with open(path, "rb") as f:
            reader, n_tensors, n_kv = _begin(f, path)
            meta = {}
            for _ in range(n_kv):
                key, kind = reader.string(), reader.unpack("I")
                value = reader.value(kind)
                if key in ("general.architecture", "general.file_type", "tokenizer.chat_template") or \
                        key.endswith(".context_length"):
                    meta[key] = value
            parameters = 0
            for _ in range(n_tensors):
                reader.string()
                count = 1
                for _ in range(reader.unpack("I")):
                    count *= reader.unpack("Q")
                reader.unpack("I"), reader.unpack("Q")  # type, offset
                parameters += count
    except (OSError, ValueError, struct.error):
        return {}
    arch = meta.get("general.architecture", "")
    return {"architecture": arch, "parameter_count": parameters, "parameter_size": _human_count(parameters),
            "quantization": FILE_TYPES.get(meta.get("general.file_type"), ""),
            "context_length": meta.get(f"{arch}.context_length"), "chat_template": meta.get("tokenizer.chat_template") or ""}
