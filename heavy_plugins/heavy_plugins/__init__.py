"""Full-mode backends for edge-server, found through the `edge_server.backends` entry point.

edge-server calls `register(registry)` only in full mode (--full). Registering imports nothing
heavy: torch, transformers and diffusers load when a model of theirs is launched first (they
take seconds and hundreds of megabytes to import).

- transformers: text (AutoModelForCausalLM), vision (AutoModelForImageTextToText) and
  speech-out (VITS, MMS-TTS) models, in transformers_backend.py, vision.py and speech.py;
- diffusers: image-out pipelines (Stable Diffusion, SD-Turbo, Stable Cascade), in pictures.py.
"""


def _transformers():
    from .transformers_backend import TransformersBackend

    return TransformersBackend()


def _diffusers():
    from .pictures import DiffusersBackend

    return DiffusersBackend()


def register(registry) -> None:
    registry.register("transformers", _transformers)
    registry.register("diffusers", _diffusers)
