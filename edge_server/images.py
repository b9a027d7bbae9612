"""Image intake: decode and check with Pillow, orient, convert, shrink; all before a stream starts."""
from __future__ import annotations

import io
import threading
from contextlib import contextmanager, nullcontext

from .errors import Busy, ImageInvalid, ImageTooLarge
from .links import load_link
from .memory import release_free_heap
from .settings import Settings

FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP"}
TRIM_AFTER_PIXELS = 4_000_000  # after decoding an image this big, hand the freed memory back at once


class DecodeBudget:
    """Pixels being decoded at once, server-wide.

    Each image within the limits is fine alone, but nothing bounded how many decode together: 12
    requests of four 40-megapixel PNGs took 5.2 GB. Decodes past the budget wait their turn.
    """

    def __init__(self, pixels: int, wait: float):
        self.pixels, self.wait = pixels, wait
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def admit(self, pixels: int):
        need = min(pixels, self.pixels)  # one image the size of the whole budget may still go alone
        with self._cond:
            if not self._cond.wait_for(lambda: self._used + need <= self.pixels, timeout=self.wait):
                raise Busy("Too many images are being read at once; try again shortly.")
            self._used += need
        try:
            yield
        finally:
            with self._cond:
                self._used -= need
                idle = self._used == 0
                self._cond.notify_all()
            if idle and pixels >= TRIM_AFTER_PIXELS:
                release_free_heap()


class ImageIntake:
    """Turns uploads and links into model-ready JPEGs, within one decode budget for the server."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.budget = DecodeBudget(settings.max_decode_pixels, settings.image_wait)

    def upload(self, data: bytes, label: str) -> bytes:
        return prepare_image(data, self.settings, label, self.budget)

    def link(self, link, label: str) -> bytes:
        return self.upload(load_link(link, self.settings, label), label)


def prepare_image(data: bytes, settings: Settings, label: str, budget: DecodeBudget | None = None) -> bytes:
    """Return the image as a JPEG no larger than settings.image_max_side, or raise a JSON-able error."""
    from PIL import Image, UnidentifiedImageError

    # Pillow's own bomb guard, set from our setting (it is process-wide; the check below is per request).
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    if len(data) > settings.max_image_bytes:
        raise ImageTooLarge(f"{label} is {len(data)} bytes; the limit is {settings.max_image_bytes}.")
    try:
        with Image.open(io.BytesIO(data), formats=sorted(FORMATS)) as img:
            # The header is read, the pixels are not: refuse decompression bombs before decoding.
            width, height = img.size
            if width * height > settings.max_image_pixels:
                raise ImageInvalid(f"{label} has {width}x{height} pixels; the limit is "
                                   f"{settings.max_image_pixels} pixels.")
            side = settings.image_max_side
            if img.format == "JPEG":
                img.draft("RGB", (side, side))  # decode at a reduced scale: far less memory for big photos
            with budget.admit(img.size[0] * img.size[1]) if budget else nullcontext():  # the size as decoded
                return _shrink(img, side)
    except Image.DecompressionBombError:
        raise ImageInvalid(f"{label} has more pixels than the limit of {settings.max_image_pixels}.") from None
    except UnidentifiedImageError:
        raise ImageInvalid(f"{label} is not a JPEG, PNG, WebP, GIF or BMP image.") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        raise ImageInvalid(f"{label} could not be decoded: {exc}")


def _shrink(img, side: int) -> bytes:
    from PIL import Image, ImageOps

    img.load()
    img = ImageOps.exif_transpose(img).convert("RGB")  # GIFs open at their first frame
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()
