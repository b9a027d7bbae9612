#!/bin/sh
# Install (or, run again after `git pull`, upgrade) edge-server in Termux and start it at boot.
# From the clone:  sh android/install.sh
set -eu
cd "$(dirname "$0")/.."

if [ -z "${TERMUX_VERSION:-}" ] && [ ! -d /data/data/com.termux ]; then
  echo "install.sh is for Termux on Android; on a Pi or other Linux see the README." >&2
  exit 1
fi

echo "== System packages"
# numpy and Pillow come built from Termux's repository (PyPI has no Android wheels of them). cmake and
# ninja from pkg, not PyPI's builds (which do not run here). libandroid-spawn: llama.cpp includes <spawn.h>.
pkg install -y python python-pip git clang cmake ninja make binutils libandroid-spawn python-numpy python-pillow \
  termux-services

echo "== Python packages (llama-cpp-python compiles here: 10 to 30 minutes on a phone)"
# OpenMP off: a Termux build may link a libomp.so the phone cannot load (llama.cpp #11979); llama.cpp's
# own threads are used instead. GGML_NATIVE (the default on the device) builds for this phone's CPU.
# GGML_RPC: the RPC backend, so the phone can be a worker (edge-server worker) or split a model over workers.
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_OPENMP=OFF} -DGGML_RPC=on"
LDFLAGS="${LDFLAGS:-} -landroid-spawn"
# At most 4 compilers at once: 8 on a phone with 6 GB can wake Android's low-memory killer mid-build.
jobs=$(nproc)
[ "$jobs" -gt 4 ] && jobs=4
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$jobs}"
export CMAKE_ARGS LDFLAGS CMAKE_BUILD_PARALLEL_LEVEL
echo "building for $(uname -m) with CMAKE_ARGS=$CMAKE_ARGS"

# huggingface_hub without hf-xet (no Android wheel; it needs Rust to build): downloads use plain HTTP.
pip install --no-deps "$(python android/requirements.py --hub)"
requirements="${TMPDIR:-${PREFIX:-/data/data/com.termux/files/usr}/tmp}/edge-server-requirements.txt"
trap 'rm -f "$requirements"' EXIT
python android/requirements.py > "$requirements"
pip install -r "$requirements"
pip install --no-deps -e .
# An llama-cpp-python installed before without the RPC backend is rebuilt with it (pip keeps an installed one).
python -m edge_server.backends.ggml_rpc ensure

echo "== Start at boot"
python -m edge_server service install

cat <<'DONE'

edge-server is installed and runs as a service. Open http://127.0.0.1:8000 in the phone's browser,
or the LAN address `edge-server key` and the log show. Read android/README.md for the two Android
settings that keep it alive: battery optimisation and the phantom-process killer.
DONE
