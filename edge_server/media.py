"""Pictures and sound as HTTP bodies: PNG or JPEG, and 16-bit PCM WAV. No model code here."""
from __future__ import annotations

import io
import wave

IMAGE_TYPES = ("image/png", "image/jpeg")


def image_type(accept) -> str:
    """PNG unless the client prefers JPEG (werkzeug's Accept object, quality values honoured)."""
    best = accept.best_match(IMAGE_TYPES, default="image/png") if accept else "image/png"
    return best or "image/png"


def encode_image(image, mimetype: str) -> bytes:
    """A PIL image as PNG or JPEG (quality 90) bytes."""
    out = io.BytesIO()
    if mimetype == "image/jpeg":
        image.convert("RGB").save(out, format="JPEG", quality=90)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def encode_wav(pieces, sampling_rate: int) -> bytes:
    """Float sample arrays in -1..1 (mono) as one 16-bit PCM WAV file."""
    import numpy as np

    samples = np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1) for p in pieces]) if pieces else \
        np.zeros(0, np.float32)
    pcm = (np.clip(np.nan_to_num(samples), -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sampling_rate))
        wav.writeframes(pcm.tobytes())
    return out.getvalue()
