"""Full-mode figures: import and launch times, the transformers text backend beside llama.cpp on the
same small model, and seconds per picture of the tiny pipelines.

    python bench/full_mode.py [--tokens 128] [--rounds 3] [--skip-gemma]

1. Import times of torch, transformers and diffusers, each in a fresh process, with its RSS.
2. A `--full` server process with the tests' tiny models (tests/*_factory.py) as local folders:
   RSS before any heavy launch, the time of each POST /model/launch (the first pays the imports).
3. Gemma 3 270M (the Q4_K_M GGUF from PyPI) through both backends in this process, greedy, the
   same prompt (this GGUF has no chat template: both render the plain User:/Assistant: one):
   llama-cpp-python on the GGUF, transformers on the same GGUF de-quantized to float32
   (`gguf_file=`; loading converts every tensor and the 262k-word tokenizer: slow).
4. Seconds per picture of the tiny Stable Diffusion at 64 and 512 px and the tiny Stable
   Cascade at 128 and 512 px (it cannot draw 64: its latents need 128 px steps), 2 steps.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests
from _common import default_model, start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

IMPORT = ("import time, resource; t = time.perf_counter(); {imports}; "
          "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")


def import_times() -> None:
    print("import (fresh process)        seconds   peak RSS")
    for label, imports in (("torch", "import torch"), ("torch + transformers", "import torch, transformers; "
                                                       "transformers.AutoModelForCausalLM"),
                           ("torch + diffusers", "import torch, diffusers; diffusers.DiffusionPipeline")):
        out = subprocess.run([sys.executable, "-c", IMPORT.format(imports=imports)], capture_output=True, text=True,
                             check=True).stdout.split()
        print(f"  {label:<27} {float(out[0]):7.2f}   {int(out[1]) / 2**20:6.0f} MiB")


def tiny_repos(root: Path) -> dict:
    import diffusers_factory as df
    import transformers_factory as tf

    repos = {"tiny-llama": tf.build_llama(root / "llama"), "tiny-llava": tf.build_vision(root / "llava"),
             "tiny-tts": tf.build_vits(root / "vits"), "tiny-sd": df.build_sd(root / "sd"),
             "tiny-cascade": df.build_cascade_decoder(root / "cascade")}
    df.build_cascade_prior(root / "cascade" / "prior_pipeline")
    return repos


def launch_times(root: Path, repos: dict) -> None:
    kinds = {"tiny-llama": ("transformers", "text"), "tiny-llava": ("transformers", "vision"),
             "tiny-tts": ("transformers", "speech-out"), "tiny-sd": ("diffusers", "image-out"),
             "tiny-cascade": ("diffusers", "image-out")}
    data = root / "data"
    data.mkdir()
    (data / "models.json").write_text(json.dumps({name: {"path": str(folder), "backend": kinds[name][0],
                                                         "kind": kinds[name][1]} for name, folder in repos.items()}))
    proc, url = start_server(data, "--full")
    try:
        rss = psutil.Process(proc.pid).memory_info().rss
        print(f"\n--full server idle: RSS {rss / 2**20:.0f} MiB (torch not imported yet)")
        print("launch through the server     seconds   RSS after")
        for name in repos:
            began = time.perf_counter()
            response = requests.post(f"{url}/model/launch", json={"model_name": name}, timeout=600)
            took = time.perf_counter() - began
            assert response.ok, response.text
            print(f"  {name:<27} {took:7.2f}   {psutil.Process(proc.pid).memory_info().rss / 2**20:6.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def gemma(tokens: int, rounds: int) -> None:
    import torch
    from heavy_plugins import device
    from heavy_plugins.transformers_backend import TextModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edge_server.backends import GenerationOptions
    from edge_server.backends.llamacpp import LlamaCppBackend
    from edge_server.cpu import default_threads

    path = default_model()
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
    options = GenerationOptions(max_new_tokens=tokens, temperature=0)
    threads, _ = default_threads()  # both backends on the server's default thread count
    torch.set_num_threads(threads)
    began = time.perf_counter()
    lite = LlamaCppBackend().load(path, n_ctx=1024, n_threads=threads)
    lite_load = time.perf_counter() - began
    device.quiet()
    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
    heavy = TextModel(model, tokenizer, model.device, 1024)
    heavy_load = time.perf_counter() - began

    def run(backend) -> tuple[float, float, int]:
        prepared = backend.prepare(messages)
        began = time.perf_counter()
        first, count = None, 0
        for piece in backend.stream(prepared, options):
            if piece:
                count += 1
                first = first or time.perf_counter() - began
        return first, count / (time.perf_counter() - began - first), count

    results = {"llama.cpp (Q4_K_M)": [], "transformers (float32)": []}
    for _ in range(rounds):
        for label, backend in zip(results, (lite, heavy)):
            results[label].append(run(backend))
    print(f"\nGemma 3 270M, greedy, {tokens} tokens, {threads} threads, median of {rounds} (load: llama.cpp "
          f"{lite_load:.1f} s, transformers {heavy_load:.1f} s)")
    print("backend                       first token   tokens/s   pieces")
    for label, runs in results.items():
        print(f"  {label:<27} {statistics.median(r[0] for r in runs) * 1000:8.0f} ms  "
              f"{statistics.median(r[1] for r in runs):8.1f}   {runs[0][2]}")
    lite.close()


def pictures(repos: dict, rounds: int) -> None:
    from heavy_plugins.pictures import DiffusersBackend

    from edge_server.backends import PictureRequest

    print(f"\ntiny pipelines, 2 steps, CPU float32, median of {rounds} after a first call")
    print("pipeline        size    seconds per picture")
    backend = DiffusersBackend()
    for name, sizes in (("tiny-sd", (64, 512)), ("tiny-cascade", (128, 512))):
        model = backend.load(repos[name], n_ctx=0)
        for side in sizes:
            request = PictureRequest("a lighthouse in a storm", side, side, 2, seed=1)
            times = []
            for _ in range(rounds + 1):
                began = time.perf_counter()
                list(model.paint(request, lambda: False))
                times.append(time.perf_counter() - began)
            print(f"  {name:<13} {side:>4} px  {statistics.median(times[1:]):8.2f}   (first {times[0]:.2f})")
        model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-gemma", action="store_true", help="skip the transformers-vs-llama.cpp comparison")
    args = parser.parse_args()
    import_times()
    with tempfile.TemporaryDirectory() as tmp:
        repos = tiny_repos(Path(tmp))
        launch_times(Path(tmp), repos)
        pictures(repos, args.rounds)
    if not args.skip_gemma:
        gemma(args.tokens, args.rounds)


if __name__ == "__main__":
    main()
