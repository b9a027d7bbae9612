"""Image path timings (run by hand): intake of phone photos, and the tiny projector's encoding.

    python bench/image.py

Writes the tests' tiny text model and tiny llava-style projector, then prints the median time
to decode/orient/shrink a 4032x3024 and a 1024x768 JPEG, and the time to first token of
/generate/fromimagetext with one 1024-pixel photo vs /generate/fromtext with no image.
"""
from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gguf_factory import write_tiny_llama, write_tiny_mmproj  # noqa: E402

from edge_server import create_app  # noqa: E402
from edge_server.images import prepare_image  # noqa: E402


def photo(width: int, height: int) -> bytes:
    """A photo-like JPEG: smooth shapes with detail, a few MB at 12 MP like a phone's camera."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 4, width // 4, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def median_ms(fn, runs=7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="edge-image-bench-"))
    model, mmproj = write_tiny_llama(tmp / "tiny.gguf"), write_tiny_mmproj(tmp / "mmproj.gguf")
    (tmp / "models.json").write_text(json.dumps({"v": {"path": str(model), "mmproj_path": str(mmproj), "n_ctx": 512}}))
    app = create_app({"data_dir": tmp})
    settings = app.extensions["edge_server"].settings
    big, small = photo(4032, 3024), photo(1024, 768)
    print(f"intake 4032x3024 JPEG ({len(big) >> 10} KiB): {median_ms(lambda: prepare_image(big, settings, 'p')):.1f} ms")
    print(f"intake 1024x768 JPEG ({len(small) >> 10} KiB): {median_ms(lambda: prepare_image(small, settings, 'p')):.1f} ms")

    client = app.test_client()
    client.post("/model/launch", json={"model_name": "v"})

    def first_piece(path, **body):
        r = client.post(path, data=body if path.endswith("imagetext") else None,
                        json=None if path.endswith("imagetext") else body, buffered=False)
        next(iter(r.response))
        r.close()

    with_image = median_ms(lambda: first_piece(
        "/generate/fromimagetext", model_name="v", prompt="What is it?", max_new_tokens="2",
        image_files=(io.BytesIO(small), "p.jpg")))
    text_only = median_ms(lambda: first_piece("/generate/fromtext", model_name="v", prompt="What is it?",
                                              max_new_tokens=2))
    print(f"first token with one 1024x768 photo: {with_image:.1f} ms; text only: {text_only:.1f} ms")
    app.extensions["edge_server"].manager.shutdown()


if __name__ == "__main__":
    main()
