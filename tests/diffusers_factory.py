"""Build tiny, random-weight, deterministic diffusers pipeline repositories in code.

Nothing is downloaded: every model is created from a config with ``torch.manual_seed`` and the
CLIP tokenizers are built from an in-code byte-level BPE vocab (vocab.json + merges.txt).

Builders (each writes what ``pipeline.save_pretrained(folder)`` writes, a few MB at most):

* ``build_sd(folder)``              -- StableDiffusionPipeline (SD-1.x / SD-Turbo layout)
* ``build_cascade_prior(folder)``   -- StableCascadePriorPipeline  (layout of stabilityai/stable-cascade-prior)
* ``build_cascade_decoder(folder, prior_ref=None)``
                                    -- StableCascadeDecoderPipeline (layout of stabilityai/stable-cascade); with
                                       ``prior_ref`` a README.md front matter ``prior: [prior_ref]`` is written, which
                                       is how the hub repo makes ``StableCascadeCombinedPipeline.from_pretrained``
                                       pull in the prior repo ("connected pipeline").

Gotcha (diffusers 0.42.1): ``PaellaVQModel`` lives in ``diffusers.pipelines.deprecated.wuerstchen`` and is not
exported at the top level, so neither ``["diffusers", "PaellaVQModel"]`` (what ``save_pretrained`` records now)
nor ``["wuerstchen", "PaellaVQModel"]`` (what the hub repo records) resolves on its own; only the full module path
``["diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model", "PaellaVQModel"]`` does.
edge-server's heavy_plugins/pictures.py makes the other two loadable. The builders write the hub spelling by default
(``vqgan_library="wuerstchen"``; or "module" / "diffusers").
"""

from __future__ import annotations

import json
import os
from pathlib import Path


import torch  # noqa: E402

# Spellings of the vqgan entry in model_index.json:
#   "wuerstchen": what stabilityai/stable-cascade has (saved with diffusers 0.27, when the model lived in
#                 diffusers.pipelines.wuerstchen); needs the alias heavy_plugins/pictures.py sets in diffusers >= 0.36.
#   "module":     the full module path -- the only spelling 0.42.1 loads with no help.
#   "diffusers":  what save_pretrained writes in 0.42.1; does NOT load back without that alias.
VQGAN_LIBRARIES = {
    "wuerstchen": "wuerstchen",
    "module": "diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model",
    "diffusers": "diffusers",
}
VQGAN_LIBRARY = "wuerstchen"

# ---------------------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------------------

_WORDS = [
    "a", "an", "the", "of", "in", "on", "with", "and", "photo", "cat", "dog", "horse", "red", "blue",
    "green", "painting", "tree", "house", "sky", "sunset", "blurry", "ugly", "low", "quality", "high",
    "detailed", "portrait", "landscape", "city", "night", "astronaut", "riding", "mountain", "lake",
]


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A tiny CLIP-style byte-level BPE: 256 byte symbols, 256 '</w>' forms, merges for a few words, specials."""
    base = list(_bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base]
    merges: list[str] = []
    seen = set(tokens)
    for word in _WORDS:
        # left-to-right merges: ("c","a") -> "ca", ("ca","t</w>") -> "cat</w>"
        syms = list(word[:-1]) + [word[-1] + "</w>"]
        while len(syms) > 1:
            pair = (syms[0], syms[1])
            merged = pair[0] + pair[1]
            m = f"{pair[0]} {pair[1]}"
            if m not in merges:
                merges.append(m)
            if merged not in seen:
                seen.add(merged)
                tokens.append(merged)
            syms = [merged] + syms[2:]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def make_clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = 77):
    """A CLIPTokenizer built in memory from the tiny vocab/merges (no files read)."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token=pad_token,
        model_max_length=model_max_length,
    )


def add_slow_tokenizer_files(folder: Path, pad_token: str = "<|endoftext|>") -> None:
    """transformers 5 ``save_pretrained`` writes only tokenizer.json + tokenizer_config.json; hub CLIP tokenizer
    folders also carry vocab.json, merges.txt and special_tokens_map.json, so add them."""
    folder = Path(folder)
    vocab, merges = _clip_vocab_and_merges()
    if not (folder / "vocab.json").exists():
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    if not (folder / "merges.txt").exists():
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    if not (folder / "special_tokens_map.json").exists():
        special = {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": pad_token,
            "unk_token": "<|endoftext|>",
        }
        (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _make_tokenizer(pad_token: str = "<|endoftext|>"):
    tok = make_clip_tokenizer(pad_token)
    return tok, len(tok)


def _clip_text_config(vocab_size: int, tok, hidden: int = 32, layers: int = 2, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    kw = {}
    if projection_dim is not None:
        kw["projection_dim"] = projection_dim
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **kw,
    )


_VARIANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _save(pipe, folder: Path, variant: str | None = None, fp32: bool = True) -> None:
    """save_pretrained like the hub repos: full-precision weights (``fp32=True``) and/or a half-precision
    variant (``variant="fp16"`` -> ``*.fp16.safetensors`` as sd-turbo, ``"bf16"`` -> ``*.bf16.safetensors`` as
    stable-cascade). ``fp32=False`` with a variant emulates a download that fetched only the variant files."""
    if fp32 or variant is None:
        pipe.save_pretrained(str(folder), safe_serialization=True)
    if variant is not None:
        pipe.to(_VARIANT_DTYPES[variant])
        pipe.save_pretrained(str(folder), safe_serialization=True, variant=variant)
        pipe.to(torch.float32)


# ---------------------------------------------------------------------------------------------------------
# Stable Diffusion
# ---------------------------------------------------------------------------------------------------------


def make_sd_pipeline(scheduler: str = "euler_a", requires_safety_checker: bool = False):
    """Tiny StableDiffusionPipeline (in memory). VAE has 4 levels -> vae_scale_factor 8, like the real one."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,  # default size 8 * vae_scale_factor(8) = 64 px
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.18215,
    )
    sched_kw = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    if scheduler == "ddim":
        sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **sched_kw)
    elif scheduler == "euler":  # what stabilityai/sd-turbo ships
        sched = EulerDiscreteScheduler(timestep_spacing="trailing", **sched_kw)
    else:
        sched = EulerAncestralDiscreteScheduler(**sched_kw)
    tok, n = _make_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_text_config(n, tok, hidden=32, layers=2))
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tok,
        unet=unet.eval(),
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=requires_safety_checker,
    )


def build_sd(
    folder: Path,
    scheduler: str = "euler_a",
    requires_safety_checker: bool = False,
    variant: str | None = None,
    fp32: bool = True,
) -> Path:
    """Write a tiny Stable Diffusion repo (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).

    model_index.json has safety_checker/feature_extractor/image_encoder = [null, null], so loading needs
    neither a safety checker nor an image processor (no torchvision).
    scheduler: "euler_a" (EulerAncestralDiscreteScheduler), "ddim", or "euler" (EulerDiscreteScheduler with
    timestep_spacing="trailing", what stabilityai/sd-turbo ships). requires_safety_checker=True mirrors sd-turbo's
    model_index.json (only makes diffusers log a warning at load)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = make_sd_pipeline(scheduler, requires_safety_checker)
    _save(pipe, folder, variant, fp32)
    add_slow_tokenizer_files(folder / "tokenizer")
    return folder


# ---------------------------------------------------------------------------------------------------------
# Stable Cascade
# ---------------------------------------------------------------------------------------------------------

# tiny stand-ins for the real sizes (real: text hidden 1280 / projection 1280, image-embed 768, prior c 2048)
_SC_TEXT_HIDDEN = 32
_SC_TEXT_PROJ = 32
_SC_IMAGE_EMBED = 16


def _cascade_text_encoder(tok, n):
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    cfg = _clip_text_config(n, tok, hidden=_SC_TEXT_HIDDEN, layers=2, projection_dim=_SC_TEXT_PROJ)
    return CLIPTextModelWithProjection(cfg).eval()


def _sc_scheduler():
    from diffusers import DDPMWuerstchenScheduler

    return DDPMWuerstchenScheduler()  # hub config is the defaults (scaler=1.0, s=0.008)


def make_cascade_prior(with_image_encoder: bool = True):
    from diffusers import StableCascadePriorPipeline, StableCascadeUNet

    # Same structure as the real stage C config (2 levels, patch_size 1, 16 latent channels, sca+crp
    # conditioning, switch_level [False]) at a tiny width.
    torch.manual_seed(0)
    prior = StableCascadeUNet(
        in_channels=16,
        out_channels=16,
        timestep_ratio_embedding_dim=64,
        patch_size=1,
        conditioning_dim=32,
        block_out_channels=(32, 32),
        num_attention_heads=(2, 2),
        down_num_layers_per_block=(1, 1),
        up_num_layers_per_block=(1, 1),
        down_blocks_repeat_mappers=(1, 1),
        up_blocks_repeat_mappers=(1, 1),
        block_types_per_layer=(
            ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),
            ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),
        ),
        clip_text_in_channels=_SC_TEXT_HIDDEN,
        clip_text_pooled_in_channels=_SC_TEXT_PROJ,
        clip_image_in_channels=_SC_IMAGE_EMBED,
        clip_seq=4,
        effnet_in_channels=None,
        pixel_mapper_in_channels=None,
        kernel_size=3,
        dropout=(0.1, 0.1),
        self_attn=True,
        timestep_conditioning_type=("sca", "crp"),
        switch_level=(False,),
    ).eval()
    tok, n = _make_tokenizer()
    text_encoder = _cascade_text_encoder(tok, n)
    image_encoder = feature_extractor = None
    if with_image_encoder:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.manual_seed(0)
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
                projection_dim=_SC_IMAGE_EMBED,
            )
        ).eval()
        feature_extractor = CLIPImageProcessor(
            crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32}
        )
    return StableCascadePriorPipeline(
        tokenizer=tok,
        text_encoder=text_encoder,
        prior=prior,
        scheduler=_sc_scheduler(),
        resolution_multiple=42.67,
        feature_extractor=feature_extractor,
        image_encoder=image_encoder,
    )


def make_cascade_decoder():
    from diffusers import StableCascadeDecoderPipeline, StableCascadeUNet
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel

    # Same structure as the real stage B config (4 levels, patch_size 2, 4 latent channels, effnet 16 ch,
    # pixel mapper, sca conditioning, attention only on the 2 deepest levels) at a tiny width.
    torch.manual_seed(0)
    decoder = StableCascadeUNet(
        in_channels=4,
        out_channels=4,
        timestep_ratio_embedding_dim=64,
        patch_size=2,
        conditioning_dim=32,
        block_out_channels=(8, 16, 32, 32),
        num_attention_heads=(0, 0, 2, 2),
        down_num_layers_per_block=(1, 1, 1, 1),
        up_num_layers_per_block=(1, 1, 1, 1),
        down_blocks_repeat_mappers=(1, 1, 1, 1),
        up_blocks_repeat_mappers=(3, 3, 2, 2),
        block_types_per_layer=(
            ("SDCascadeResBlock", "SDCascadeTimestepBlock"),
            ("SDCascadeResBlock", "SDCascadeTimestepBlock"),
            ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),
            ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),
        ),
        clip_text_in_channels=None,
        clip_text_pooled_in_channels=_SC_TEXT_PROJ,
        clip_image_in_channels=None,
        clip_seq=4,
        effnet_in_channels=16,
        pixel_mapper_in_channels=3,
        kernel_size=3,
        dropout=(0.0, 0.0, 0.1, 0.1),
        self_attn=True,
        timestep_conditioning_type=("sca",),
        switch_level=None,
    ).eval()
    torch.manual_seed(0)
    # Real stage A: levels=2, up_down_scale_factor=2 (4x), latent_channels=4, embed_dim=384, 8192 codes.
    vqgan = PaellaVQModel(
        in_channels=3,
        out_channels=3,
        up_down_scale_factor=2,
        levels=2,
        bottleneck_blocks=1,
        embed_dim=16,
        latent_channels=4,
        num_vq_embeddings=16,
        scale_factor=0.3764,
    ).eval()
    tok, n = _make_tokenizer()
    text_encoder = _cascade_text_encoder(tok, n)
    return StableCascadeDecoderPipeline(
        decoder=decoder,
        tokenizer=tok,
        text_encoder=text_encoder,
        scheduler=_sc_scheduler(),
        vqgan=vqgan,
        latent_dim_scale=10.67,
    )


def _patch_model_index(folder: Path, vqgan_library: str | None = None, hub_names: bool = True) -> dict:
    """Make model_index.json look like the hub repos:
    * vqgan -> [<vqgan_library spelling>, "PaellaVQModel"] (hub: "wuerstchen")
    * tokenizers -> ["transformers", "CLIPTokenizerFast"] (what the hub repos record; transformers 5 aliases it)
    * feature extractor -> ["transformers", "CLIPImageProcessor"] (transformers 5 without torchvision saves the
      class as "CLIPImageProcessorPil"; on load it falls back to the PIL processor with a warning)."""
    p = Path(folder) / "model_index.json"
    idx = json.loads(p.read_text())
    for key, val in list(idx.items()):
        if not (isinstance(val, list) and len(val) == 2):
            continue
        if key.endswith("vqgan") and vqgan_library is not None:
            idx[key] = [VQGAN_LIBRARIES.get(vqgan_library, vqgan_library), "PaellaVQModel"]
        elif hub_names and key.endswith("tokenizer") and val[1] == "CLIPTokenizer":
            idx[key] = ["transformers", "CLIPTokenizerFast"]
        elif hub_names and key.endswith("feature_extractor") and val[1] == "CLIPImageProcessorPil":
            idx[key] = ["transformers", "CLIPImageProcessor"]
    p.write_text(json.dumps(idx, indent=2, sort_keys=True) + "\n")
    return idx


def _write_readme(folder: Path, title: str, prior_ref: str | os.PathLike | None = None) -> None:
    lines = ["---", "pipeline_tag: text-to-image", "license: other"]
    if prior_ref is not None:  # connected pipeline: diffusers reads `prior:` from the model card
        lines += ["prior:", f"- {prior_ref}"]
    lines += ["---", "", f"# {title} (tiny random-weight test fixture)", ""]
    (Path(folder) / "README.md").write_text("\n".join(lines))


def build_cascade_prior(
    folder: Path,
    with_image_encoder: bool = True,
    hub_names: bool = True,
    variant: str | None = None,
    fp32: bool = True,
) -> Path:
    """stabilityai/stable-cascade-prior layout: README.md, model_index.json (StableCascadePriorPipeline), prior/,
    text_encoder/, tokenizer/, scheduler/, and (as on the hub; with_image_encoder=False writes them as [null,null])
    image_encoder/ + feature_extractor/."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save(make_cascade_prior(with_image_encoder), folder, variant, fp32)
    _patch_model_index(folder, hub_names=hub_names)
    add_slow_tokenizer_files(folder / "tokenizer")
    _write_readme(folder, "Stable Cascade Prior")
    return folder


def build_cascade_decoder(
    folder: Path,
    prior_ref: str | os.PathLike | None = None,
    vqgan_library: str = VQGAN_LIBRARY,
    hub_names: bool = True,
    variant: str | None = None,
    fp32: bool = True,
) -> Path:
    """stabilityai/stable-cascade layout: README.md (YAML front matter ``prior: [prior_ref]`` when given),
    model_index.json (StableCascadeDecoderPipeline, latent_dim_scale 10.67), decoder/, text_encoder/, tokenizer/,
    scheduler/, vqgan/."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save(make_cascade_decoder(), folder, variant, fp32)
    _patch_model_index(folder, vqgan_library=vqgan_library, hub_names=hub_names)
    add_slow_tokenizer_files(folder / "tokenizer")
    _write_readme(folder, "Stable Cascade", prior_ref)
    return folder


