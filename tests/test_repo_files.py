"""Which files of a heavy model's repository are downloaded, and that none lands outside its folder.
No torch needed: the store's own code, against the fake hub."""
from __future__ import annotations

import pytest

from edge_server.catalog import parse_spec
from edge_server.repo_files import MARKER, safe_name, select, weight_kind
from edge_server.settings import Settings
from edge_server.store import ModelStore


@pytest.mark.parametrize("name, safe", [
    ("config.json", True), ("unet/diffusion_pytorch_model.safetensors", True), (".gitattributes", True),
    ("../evil.json", False), ("a/../../evil", False), ("/etc/passwd", False), ("C:evil", False),
    ("a\\..\\evil", False), ("bad\x00name", False), ("line\nbreak", False), (MARKER, False), ("", False),
])
def test_safe_names(name, safe):
    assert safe_name(name) is safe


def test_weight_kinds():
    assert weight_kind("unet/diffusion_pytorch_model.fp16.safetensors") == ("unet", "diffusion_pytorch_model", "fp16")
    assert weight_kind("model-00001-of-00002.safetensors") == (".", "model", None)
    assert weight_kind("model.fp16-00001-of-00002.safetensors") == (".", "model", "fp16")
    assert weight_kind("config.json") is None


DIFFUSERS = ["model_index.json", "README.md", ".gitattributes", "sd_turbo.safetensors", "unet/config.json",
             "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
             "unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.safetensors",
             "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.bin", "onnx/unet/model.onnx",
             "tokenizer/vocab.json"]


def test_a_diffusers_repository_gives_one_copy_of_each_weight():
    assert select(DIFFUSERS) == [
        "model_index.json", "README.md", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.fp16.safetensors", "tokenizer/vocab.json"]
    # The variant asked for where a folder has it; the plain weights elsewhere.
    assert select(DIFFUSERS, "fp16") == [
        "model_index.json", "README.md", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.fp16.safetensors", "tokenizer/vocab.json"]


def test_sharded_weights_keep_every_shard_and_their_index():
    names = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
             "model-00002-of-00002.safetensors", "pytorch_model-00001-of-00002.bin", "flax_model.msgpack",
             "model.fp16-00001-of-00002.safetensors", "model.fp16-00002-of-00002.safetensors"]
    assert select(names) == names[:4]
    assert select(names, "fp16") == ["config.json", "model.fp16-00001-of-00002.safetensors",
                                     "model.fp16-00002-of-00002.safetensors"]


def test_allow_patterns_and_a_second_repository_under_a_prefix():
    names = ["model_index.json", "decoder/x.safetensors", "decoder_lite/x.safetensors", "stage_c.safetensors",
             "prior_pipeline/model_index.json", "prior_pipeline/prior/x.bf16.safetensors",
             "prior_pipeline/prior_lite/x.bf16.safetensors"]
    allow = ("model_index.json", "decoder/*", "prior_pipeline/model_index.json", "prior_pipeline/prior/*")
    assert sorted(select(names, "bf16", allow, prefixes=("", "prior_pipeline/"))) == [
        "decoder/x.safetensors", "model_index.json", "prior_pipeline/model_index.json",
        "prior_pipeline/prior/x.bf16.safetensors"]


def test_a_hostile_listing_writes_nothing_outside_the_folder(tmp_path, fake_hub):
    repo = "edge-test/hostile"
    for name in ("config.json", "model.safetensors", "../escaped.json", "sub/../../escaped2.json", "C:drive.json"):
        fake_hub.add(repo, name, b"{}")
    settings = Settings(data_dir=tmp_path / "data", hf_endpoint=fake_hub.url)
    store = ModelStore(settings)
    spec = parse_spec("hostile", {"repo_id": repo, "backend": "transformers", "kind": "text"})
    files = store.download(spec)
    folder = settings.models_dir / "hostile"
    assert files.model == folder and (folder / MARKER).is_file()
    assert sorted(p.name for p in folder.iterdir()) == sorted([MARKER, "config.json", "model.safetensors"])
    assert not list(tmp_path.rglob("escaped*")) and not list(tmp_path.rglob("*drive*"))
    assert store.files(spec) == files and store.installed_bytes(spec) > 0


def test_heavy_entries_are_checked_against_their_backend():
    from edge_server.errors import CatalogError

    with pytest.raises(CatalogError, match="diffusers backend runs image-out"):
        parse_spec("x", {"repo_id": "a/b", "backend": "diffusers", "kind": "text"})
    with pytest.raises(CatalogError, match="llama-cpp backend runs text and vision"):
        parse_spec("x", {"repo_id": "a/b", "filename": "m.gguf", "kind": "speech-out"})
    assert parse_spec("x", {"repo_id": "a/b", "backend": "transformers", "kind": "speech-out"}).heavy
