"""Text-to-image pipelines in diffusers: Stable Diffusion and its few-step kin (SD-Turbo), Stable Cascade."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from edge_server.backends import IMAGE_OUT, PictureRequest
from edge_server.repo_files import PRIOR_FOLDER

from . import device as devices

log = logging.getLogger("heavy_plugins.diffusers")
FEW_STEPS = 4  # at this many steps or fewer the model is a distilled one, made to run without guidance
CASCADE_PRIOR_GUIDANCE = 4.0  # Stable Cascade's published settings: the decoder runs unguided, half the steps


class Cancelled(Exception):
    """Raised from a pipeline's step callback: the client went away or the model was stopped."""


def _cascade_vq_model() -> None:
    """Stable Cascade's model_index.json names its VQ model ["wuerstchen", "PaellaVQModel"], written when it
    lived in diffusers.pipelines.wuerstchen; now it is under diffusers.pipelines.deprecated. diffusers
    looks such a name up among its pipelines first, so the old name is pointed at the new place."""
    import diffusers.pipelines as pipelines
    import diffusers.pipelines.deprecated.wuerstchen as wuerstchen

    if not hasattr(pipelines, "wuerstchen"):
        setattr(pipelines, "wuerstchen", wuerstchen)


class DiffusersBackend:
    name = "diffusers"

    def trained_context(self, model_path: Path) -> int | None:
        return None

    def memory_needs(self, model_path: Path, mmproj_path: Path | None = None):
        return None

    def load(self, model_path: Path, *, n_ctx: int, mmproj_path: Path | None = None, chat_handler: str | None = None,
             n_threads: int | None = None, kind: str = IMAGE_OUT, device: str | None = None) -> "PictureModel":
        if kind != IMAGE_OUT:
            raise ValueError(f"the diffusers backend draws pictures (image-out); {kind} needs another backend")
        where, dtype = devices.choose(device, n_threads)
        devices.quiet(diffusers=True)
        return PictureModel(_load_pipeline(model_path, where, dtype), where)


def _load_pipeline(folder: Path, device, dtype):
    import diffusers
    import torch

    _cascade_vq_model()
    options = {"dtype": dtype, "variant": devices.weights_variant(folder)}
    if (folder / PRIOR_FOLDER / "model_index.json").is_file():  # Stable Cascade: decoder here, prior beside it
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            options["dtype"] = torch.bfloat16  # its prior overflows float16 into black pictures
        prior = diffusers.StableCascadePriorPipeline.from_pretrained(folder / PRIOR_FOLDER, **options)
        decoder = diffusers.StableCascadeDecoderPipeline.from_pretrained(folder, **options)
        return diffusers.StableCascadeCombinedPipeline(
            tokenizer=decoder.tokenizer, text_encoder=decoder.text_encoder, decoder=decoder.decoder,
            scheduler=decoder.scheduler, vqgan=decoder.vqgan, prior_prior=prior.prior,
            prior_text_encoder=prior.text_encoder, prior_tokenizer=prior.tokenizer, prior_scheduler=prior.scheduler,
            prior_feature_extractor=prior.feature_extractor, prior_image_encoder=prior.image_encoder)
    return diffusers.DiffusionPipeline.from_pretrained(folder, **options)


class PictureModel(devices.Held):
    def __init__(self, pipe, device):
        import diffusers

        self.cascade = isinstance(pipe, diffusers.StableCascadeCombinedPipeline)
        if devices.fits_on(device, sum(devices.module_bytes(m) for m in pipe.components.values())):
            pipe.to(device)
        else:  # only with an accelerator: keep the parts in RAM and move each in when it runs
            log.info("the pipeline does not fit in %s's free memory: parts move in as they run", device)
            pipe.enable_model_cpu_offload(device=device)
        pipe.set_progress_bar_config(disable=True)
        if hasattr(pipe, "enable_vae_tiling"):
            pipe.enable_vae_tiling()  # big pictures decode in tiles: a 2048 px one would need gigabytes at once
        self.model, self.device = pipe, device
        self.capabilities = frozenset({IMAGE_OUT})
        self.multiple = self._multiple()

    def _multiple(self) -> int:
        """The step picture sides come in: Stable Cascade's latents need 128 px (its prior compresses by 42.67 and
        the decoder's patches are 2 wide: 64 or 192 fail), Stable Diffusion's VAE 8 px."""
        return 128 if self.cascade else getattr(self.model, "vae_scale_factor", 8)

    def fit_size(self, width: int, height: int) -> tuple[int, int]:
        step = self.multiple
        return tuple(max(step, round(side / step) * step) for side in (width, height))

    def paint(self, request: PictureRequest, cancelled) -> Iterator:
        import torch

        generator = torch.Generator("cpu")
        if request.seed is not None:
            generator.manual_seed(request.seed)
        else:
            generator.seed()

        def check(pipe, step, timestep, kwargs):
            if cancelled():
                raise Cancelled("stopped")
            return kwargs

        options = {"prompt": request.prompt, "negative_prompt": request.negative_prompt or None,
                   "width": request.width, "height": request.height, "generator": generator,
                   "output_type": "pil", "callback_on_step_end": check}
        if self.cascade:
            options.update(prior_num_inference_steps=request.steps, num_inference_steps=max(1, request.steps // 2),
                           prior_guidance_scale=CASCADE_PRIOR_GUIDANCE if request.guidance_scale is None
                           else request.guidance_scale, decoder_guidance_scale=0.0, prior_callback_on_step_end=check)
        else:
            options["num_inference_steps"] = request.steps
            guidance = request.guidance_scale
            if guidance is None and request.steps <= FEW_STEPS:
                guidance = 0.0
            if guidance is not None:
                options["guidance_scale"] = guidance
        with torch.inference_mode():
            image = self.model(**options).images[0]
        yield image
