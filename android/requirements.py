"""edge-server's requirements for Termux, where huggingface_hub must come without hf-xet.

    python android/requirements.py --hub   # the huggingface_hub requirement (install it with --no-deps)
    python android/requirements.py         # everything else: requirements.txt and huggingface_hub's own

hf-xet has no Android wheel and needs a Rust toolchain to build; huggingface_hub only uses it when it
is installed, and edge-server downloads model files over plain HTTP(S) itself. Run the second form
after huggingface_hub is installed (its dependencies are read from its metadata).
"""
from __future__ import annotations

import re
import sys
from importlib.metadata import requires
from pathlib import Path

LEFT_OUT = {"hf-xet"}


def name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def own() -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "requirements.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def hub() -> str:
    return next(line for line in own() if name(line) == "huggingface-hub")


def rest() -> list[str]:
    hub_needs = [r for r in requires("huggingface_hub") or [] if "extra ==" not in r and name(r) not in LEFT_OUT]
    return [line for line in own() if name(line) != "huggingface-hub"] + hub_needs


if __name__ == "__main__":
    print(hub() if sys.argv[1:] == ["--hub"] else "\n".join(rest()))
