"""Read a few metadata values from a GGUF header without loading the model (or llama.cpp)."""
from __future__ import annotations

import struct
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
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALARS:  # skip without decoding
                self.f.seek(struct.calcsize("<" + _SCALARS[item]) * count, 1)
            else:
                for _ in range(count):
                    self.value(item)
            return None
        raise ValueError(f"unknown GGUF value type {kind}")


def context_length(path: Path) -> int | None:
    """Return `<architecture>.context_length`, reading only as far as needed."""
    with open(path, "rb") as f:
        reader = _Reader(f)
        if f.read(4) != b"GGUF" or reader.unpack("I") < 2:
            raise ValueError(f"{path} is not a GGUF v2+ file")
        reader.unpack("Q")  # tensor count
        arch, lengths = None, {}
        for _ in range(reader.unpack("Q")):
            key, value = reader.string(), reader.value(reader.unpack("I"))
            if key == "general.architecture":
                arch = value
            elif key.endswith(".context_length"):
                lengths[key] = value
            if arch and f"{arch}.context_length" in lengths:
                return int(lengths[f"{arch}.context_length"])
    return None
