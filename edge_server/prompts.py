"""The plain prompt format for models without a chat template (base models)."""
from __future__ import annotations

PLAIN_STOP = ("\nUser:",)
_LABELS = {"user": "User", "assistant": "Assistant"}


def plain_prompt(messages: list[dict]) -> str:
    """Render the system prompt as a paragraph, then `User:`/`Assistant:` lines, ending with `Assistant:`."""
    parts, lines = [], []
    for message in messages:
        if message["role"] == "system":
            parts.append(message["content"].strip() + "\n\n")
        else:
            lines.append(f"{_LABELS[message['role']]}: {message['content'].strip()}")
    lines.append("Assistant:")
    return "".join(parts) + "\n".join(lines)
