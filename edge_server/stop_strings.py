"""Shaping a stream of text pieces: cut at the first stop string (never showing part of one), and trim the
answer's outer whitespace."""
from __future__ import annotations


class StopScanner:
    """Cut the text at the first stop string, holding back any tail that might begin one."""

    def __init__(self, stops):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buf = self.pending + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return buf[:min(hits)], True
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), hold, -1):
                if buf.endswith(stop[:n]):
                    hold = n
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[:len(buf) - hold], False

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


class Trim:
    """Drop the whitespace an answer begins and ends with, as pieces stream.

    A tokenizer's leading space ("▁Hello") and a newline before the end-of-turn token are not part of the
    answer. Leading whitespace is dropped until the first visible character; a run of whitespace is held
    back until more text follows it, since a stream cannot take back what it has sent; what is held at the
    end is dropped."""

    def __init__(self):
        self.started = False
        self.held = ""

    def feed(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        body = text.rstrip()
        if not body:
            self.held += text
            return ""
        out, self.held = self.held + body, text[len(body):]
        return out
