"""Build tiny, random-weight Hugging Face model repositories entirely in code.

Every builder writes a complete ``save_pretrained``-style folder (config,
``model.safetensors``, tokenizer / processor files) that loads offline with the
``Auto*`` classes of transformers 5.x.  Nothing is downloaded; weights are
random but deterministic (``torch.manual_seed``).  Each folder is well under
5 MB and builds in a few seconds on CPU.

    build_llama(folder)   -> LlamaForCausalLM + byte-level BPE fast tokenizer + ChatML template
    build_vision(folder)  -> LlavaForConditionalGeneration (tiny CLIP vision + tiny Llama text)
                             + LlavaProcessor (PIL image processor, no torchvision needed)
    build_vits(folder)    -> VitsModel (MMS-TTS architecture) + character VitsTokenizer
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import LlamaConfig

__all__ = ["build_llama", "build_vision", "build_vits", "CHATML_TEMPLATE", "VISION_CHAT_TEMPLATE"]

SEED = 0

# A small in-code corpus; the byte-level alphabet guarantees that *any* text
# (ASCII or not) tokenizes without unknown tokens, the corpus just gives BPE
# some merges so that ordinary English is not one token per byte.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today? I am fine, thank you.",
    "You are a helpful assistant. Answer the question briefly.",
    "What is the capital of France? The capital of France is Paris.",
    "Describe this image. A photo of a cat sitting on a red chair.",
    "Once upon a time there was a little model that could generate text.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: + - * / = ( ) [ ] { } < > @ # $ % ^ & _ | ~",
    "system user assistant tool function message content role image text",
    "def main():\n    print('hello')\n    return 0\n",
    "the of and to in is it that for on with as was be by this are at from or an",
]

# ChatML-style template (same shape as Qwen / SmolLM2).
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

# Same ChatML layout, but content parts of type "image" become the processor's
# "<image>" placeholder (the LlavaProcessor expands it to N image tokens).
VISION_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

_SPECIAL_TOKENS = ["<|endoftext|>", "<s>", "<|im_start|>", "<|im_end|>"]


def _make_bpe_tokenizer(vocab_size: int = 384, extra_special: tuple[str, ...] = ()):
    """Byte-level BPE trained on ``_CORPUS``; returns a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIAL_TOKENS + list(extra_special)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=2048,
        padding_side="left",
        extra_special_tokens=None,
    )
    return fast


def _tiny_llama_config(vocab_size: int, tokenizer) -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,  # separate lm_head, see _make_lm_head_readable
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@contextlib.contextmanager
def _quiet_progress_bars():
    """Hide the "Writing model shards" tqdm bar while saving; restores the previous state."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@torch.no_grad()
def _make_lm_head_readable(lm_head_weight: torch.Tensor, tokenizer, std: float = 1.0) -> None:
    """Make random generations readable and stream-friendly.

    Rows of the (untied) output projection are re-drawn with a large std for
    tokens that decode to printable ASCII containing a letter or digit, and
    zeroed for everything else (special tokens incl. EOS, control bytes,
    lone non-ASCII bytes that decode to U+FFFD, pure whitespace).  A zero row
    gives logit 0 while the max over ~250 N(0, 32) logits is ~+15, so greedy
    (and practically also sampled) generation only ever emits readable
    tokens and never stops early on EOS: it always runs to max_new_tokens.
    """
    gen = torch.Generator().manual_seed(SEED + 1)
    new = torch.zeros_like(lm_head_weight)
    special_ids = set(tokenizer.all_special_ids)
    for i in range(lm_head_weight.shape[0]):
        if i in special_ids:
            continue
        piece = tokenizer.decode([i])
        if piece and all(32 <= ord(c) < 127 for c in piece) and any(c.isalnum() for c in piece):
            new[i] = torch.randn(lm_head_weight.shape[1], generator=gen) * std
    lm_head_weight.copy_(new)


def _save_generation_config(model, tokenizer, folder: Path) -> None:
    from transformers import GenerationConfig

    gen = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=16,
    )
    model.generation_config = gen
    gen.save_pretrained(folder)


def build_llama(folder: Path) -> Path:
    """Write a tiny LlamaForCausalLM + fast BPE tokenizer with a ChatML chat template."""
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)

    tokenizer = _make_bpe_tokenizer()
    tokenizer.chat_template = CHATML_TEMPLATE
    config = _tiny_llama_config(len(tokenizer), tokenizer)
    model = LlamaForCausalLM(config).eval()
    _make_lm_head_readable(model.lm_head.weight, tokenizer)
    _save_generation_config(model, tokenizer, folder)
    with _quiet_progress_bars():
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_vision(folder: Path, image_size: int = 32, patch_size: int = 8) -> Path:
    """Write a tiny LLaVA (CLIP vision tower + Llama text model) with a PIL-based processor."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)

    tokenizer = _make_bpe_tokenizer(extra_special=("<image>",))
    tokenizer.chat_template = VISION_CHAT_TEMPLATE
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    text_config = _tiny_llama_config(len(tokenizer), tokenizer)
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",  # drop CLS -> (size/patch)^2 image tokens
        vision_feature_layer=-1,
        image_seq_length=(image_size // patch_size) ** 2,
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config).eval()
    _make_lm_head_readable(model.lm_head.weight, tokenizer)

    image_processor = LlavaImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        do_pad=False,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,  # CLIP CLS token (removed again by the "default" strategy)
        chat_template=VISION_CHAT_TEMPLATE,
    )
    _save_generation_config(model, tokenizer, folder)
    with _quiet_progress_bars():
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# Character vocabulary in the style of facebook/mms-tts-eng (lower-case letters,
# space, apostrophe, hyphen, digits).  Id 0 is the pad / "blank" token that the
# VitsTokenizer intersperses between characters (add_blank=True).
_VITS_CHARS = ["<pad>", " ", "'", "-"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789") + ["<unk>"]


def build_vits(folder: Path) -> Path:
    """Write a tiny VitsModel (MMS-TTS architecture) + character VitsTokenizer."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)

    vocab = {ch: i for i, ch in enumerate(_VITS_CHARS)}
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tokenizer = VitsTokenizer(
        vocab_file=str(vocab_file),
        pad_token="<pad>",
        unk_token="<unk>",
        language="eng",
        add_blank=True,
        normalize=True,
        phonemize=False,
        is_uroman=False,
    )

    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        window_size=4,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        depth_separable_channels=2,
        depth_separable_num_layers=2,
        duration_predictor_flow_bins=4,
        duration_predictor_num_flows=2,
        duration_predictor_filter_channels=16,
        prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        wavenet_kernel_size=3,
        use_stochastic_duration_prediction=True,
        sampling_rate=16_000,
        pad_token_id=vocab["<pad>"],
        layerdrop=0.0,
    )
    model = VitsModel(config).eval()
    with _quiet_progress_bars():
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
