"""Images through llama-cpp-python's multimodal chat handlers (llava, MiniCPM-V, Qwen2.5-VL, MTMD...)."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterator

from .base import GenerationOptions, Prepared

# Catalog name -> class in llama_cpp.llama_chat_format. "mtmd" renders with the model's own chat
# template and suits any projector llama.cpp's mtmd knows (Gemma 3, SmolVLM, Qwen2-VL, ...).
HANDLERS = {
    "mtmd": "MTMDChatHandler",
    "llava-1.5": "Llava15ChatHandler",
    "llava-1.6": "Llava16ChatHandler",
    "moondream": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
    "qwen2.5-vl": "Qwen25VLChatHandler",
    "gemma4": "Gemma4ChatHandler",
}
DEFAULT_HANDLER = "mtmd"


def make_chat_handler(name: str | None, mmproj_path: Path):
    from llama_cpp import llama_chat_format

    cls = getattr(llama_chat_format, HANDLERS[name or DEFAULT_HANDLER])
    return cls(clip_model_path=str(mmproj_path), verbose=False)


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def first_guess_tokens_per_image(n_ctx: int) -> int:
    """Tokens an image may take before one has been measured: llava-1.5's 576, less in small contexts."""
    return min(576, n_ctx // 8)


def prepare_vision(model, messages: list[dict], images: list[bytes]) -> Prepared:
    """Put the images (JPEG bytes) into the last user turn, as the handlers expect.

    The count includes the images at the model's tokens per image: a first guess until the first
    image has been read, then what it measured. Without it a chat with pictures outgrew the
    context unnoticed and every later turn failed.
    """
    text_only = model.prepare(messages)
    last = dict(messages[-1])
    last["content"] = [{"type": "image_url", "image_url": {"url": _data_uri(jpeg)}} for jpeg in images] + [
        {"type": "text", "text": last["content"]}]
    return Prepared(text_only.n_tokens + len(images) * model.tokens_per_image, messages[:-1] + [last],
                    images=list(images), text_tokens=text_only.n_tokens)


def stream_vision(model, prepared: Prepared, options: GenerationOptions) -> Iterator[str]:
    chunks = model.llm.create_chat_completion(
        messages=prepared.payload, stream=True,
        max_tokens=max(1, min(options.max_new_tokens, model.n_ctx - prepared.n_tokens)),
        temperature=options.temperature, top_p=options.top_p, top_k=options.top_k,
        repeat_penalty=options.repeat_penalty, seed=options.seed,
    )
    measured = False
    try:
        for chunk in chunks:
            if not measured:  # the prompt has been read: what is in the cache beyond the text is the images
                measured = True
                per_image = max(1, (model.llm.n_tokens - prepared.text_tokens) // len(prepared.images))
                # The first measure replaces the guess; later ones can only raise it (a low reading must
                # not make the chat outgrow the context unnoticed again).
                model.tokens_per_image = per_image if not model.image_measured else max(model.tokens_per_image,
                                                                                        per_image)
                model.image_measured = True
            text = chunk["choices"][0]["delta"].get("content")
            if text:
                yield text
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
