"""Engines that run models. None of them knows about HTTP."""
from .base import (IMAGE_OUT, SPEECH_OUT, TEXT, VISION, Backend, GenerationOptions, ImageModel, LoadedModel,
                   PictureRequest, Prepared, SpeechModel)
from .registry import ENTRY_POINT_GROUP, BackendRegistry, build_registry

__all__ = ["Backend", "BackendRegistry", "ENTRY_POINT_GROUP", "GenerationOptions", "IMAGE_OUT", "ImageModel",
           "LoadedModel", "PictureRequest", "Prepared", "SPEECH_OUT", "SpeechModel", "TEXT", "VISION",
           "build_registry"]
