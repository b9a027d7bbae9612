#!/bin/sh
# Install what the tests need: the package with its test extras, full mode (torch, transformers, diffusers and
# the heavy plugins), and Debian's chromium (the browser tests; playwright drives it, its own browser download
# is not used), shellcheck (the shell scripts) and systemd-analyze (the boot unit). Safe to run again.
set -e
cd "$(dirname "$0")/.."
# Workers (llama.cpp's RPC backend) need llama-cpp-python built with GGML_RPC: a first build has it, and one
# installed without it (before, or from pip's cache) is rebuilt once (about 7 minutes on 2 cores).
CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_RPC=on" pip install -e ".[test]"
python -m edge_server.backends.ggml_rpc ensure
# torch first and pinned: 2.13.0 is a CPU build (an unpinned torch pulls a CUDA build of several GB).
# A torch already installed (another build for this machine's platform) is kept.
python -c "import torch" 2>/dev/null || pip install "torch==${EDGE_TEST_TORCH:-2.13.0}"
pip install -r extra.requirements.txt
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck disable=SC2086  # one word per package
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: not installed:$missing; the tests that need them are skipped (as root: apt-get install$missing)" >&2
  fi
fi
