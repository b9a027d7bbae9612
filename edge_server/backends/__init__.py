"""Engines that run models. None of them knows about HTTP."""
from .base import IMAGE_OUT, TEXT, VISION, Backend, GenerationOptions, LoadedModel, Prepared
from .registry import ENTRY_POINT_GROUP, BackendRegistry, build_registry

__all__ = ["Backend", "BackendRegistry", "ENTRY_POINT_GROUP", "GenerationOptions", "IMAGE_OUT", "LoadedModel",
           "Prepared", "TEXT", "VISION", "build_registry"]
