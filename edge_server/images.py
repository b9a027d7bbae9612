"""Image intake: decode and check with Pillow, orient, convert, shrink; all before a stream starts."""
from __future__ import annotations

import io

from .errors import ImageInvalid, ImageTooLarge
from .settings import Settings

FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP"}


def prepare_image(data: bytes, settings: Settings, label: str) -> bytes:
    """Return the image as a JPEG no larger than settings.image_max_side, or raise a JSON-able error."""
    from PIL import Image, ImageOps, UnidentifiedImageError

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
            img.load()
            img = ImageOps.exif_transpose(img).convert("RGB")  # GIFs open at their first frame
            img.thumbnail((side, side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            img.save(out, "JPEG", quality=92)
            return out.getvalue()
    except Image.DecompressionBombError:
        raise ImageInvalid(f"{label} has more pixels than the limit of {settings.max_image_pixels}.") from None
    except UnidentifiedImageError:
        raise ImageInvalid(f"{label} is not a JPEG, PNG, WebP, GIF or BMP image.") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        raise ImageInvalid(f"{label} could not be decoded: {exc}")
