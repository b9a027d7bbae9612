"""Write tiny random-weight GGUF models with the `gguf` package (well under a second each)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

N_EMBD = 64


def write_tiny_llama(path: Path, *, chat_template: str | None = CHAT_TEMPLATE, context_length: int = 4096,
                     n_layers: int = 2, seed: int = 0) -> Path:
    """A llama-architecture model over a byte-level vocabulary (<unk>, <s>, </s>, then 256 byte tokens)."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    n_vocab, n_ff, n_head = len(tokens), 128, 4

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_context_length(context_length)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    if chat_template:
        writer.add_chat_template(chat_template)

    def weight(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    output = weight(n_vocab, N_EMBD)
    output[:3] = 0.0  # special tokens never win a greedy pick, so answers run to max_new_tokens
    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for i in range(n_layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(N_EMBD, N_EMBD, scale=0.2))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, N_EMBD, scale=0.2))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, N_EMBD, scale=0.2))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(N_EMBD, n_ff, scale=0.2))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_mmproj(path: Path, *, text_embd: int = N_EMBD, image_size: int = 32, patch_size: int = 8,
                      seed: int = 1) -> Path:
    """A CLIP vision encoder with llava's `mlp` projector whose output width matches the tiny text model.

    Keys and tensor names follow llama.cpp's tools/mtmd/clip.cpp (load_hparams, load_tensors) and
    models/llava.cpp; a 32-pixel image becomes 16 patches, so 16 image tokens.
    """
    import gguf

    rng = np.random.default_rng(seed)
    n_embd, n_ff, n_head, n_layer = 32, 64, 2, 2
    n_patches = (image_size // patch_size) ** 2

    def weight(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("tiny-test-mmproj")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.projection_dim", text_embd)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_uint32("clip.vision.block_count", n_layer)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    writer.add_tensor("v.patch_embd.weight", weight(n_embd, 3, patch_size, patch_size))
    writer.add_tensor("v.position_embd.weight", weight(n_patches, n_embd))
    writer.add_tensor("v.pre_ln.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("v.pre_ln.bias", np.zeros(n_embd, dtype=np.float32))
    for i in range(n_layer):
        for norm in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{i}.{norm}.weight", np.ones(n_embd, dtype=np.float32))
            writer.add_tensor(f"v.blk.{i}.{norm}.bias", np.zeros(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{i}.{name}.weight", weight(n_embd, n_embd))
            writer.add_tensor(f"v.blk.{i}.{name}.bias", np.zeros(n_embd, dtype=np.float32))
        writer.add_tensor(f"v.blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"v.blk.{i}.ffn_up.bias", np.zeros(n_ff, dtype=np.float32))
        writer.add_tensor(f"v.blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
        writer.add_tensor(f"v.blk.{i}.ffn_down.bias", np.zeros(n_embd, dtype=np.float32))
    writer.add_tensor("mm.0.weight", weight(text_embd, n_embd))
    writer.add_tensor("mm.0.bias", np.zeros(text_embd, dtype=np.float32))
    writer.add_tensor("mm.2.weight", weight(text_embd, text_embd))
    writer.add_tensor("mm.2.bias", np.zeros(text_embd, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
