"""llama.cpp's RPC backend through ctypes: its server (a worker's compute) and its devices (the server's).

Both ends use the ggml libraries llama-cpp-python installed, which have the RPC backend only when it was
built with CMAKE_ARGS="-DGGML_RPC=on". Every call here can abort the process on a network failure
(ggml's RPC client does when a worker goes away): it is only ever called in a child process.

`python -m edge_server.backends.ggml_rpc check` exits 1 when the installed llama-cpp-python lacks the RPC
backend; `... ensure` rebuilds it with the backend then (the install scripts run it); `... serve HOST:PORT
THREADS CACHE_DIR` runs the server.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

CPU = 0  # GGML_BACKEND_DEVICE_TYPE_CPU


def die_with_parent() -> None:
    """Have the kernel end this child when its parent dies, even by SIGKILL (Linux and Android). The signal
    follows the thread that started the child: only for children of a thread that lives as long as its process."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


def library_dir() -> Path:
    """Where llama-cpp-python loads its libraries from (LLAMA_CPP_LIB_PATH, as llama_cpp itself reads it)."""
    if os.environ.get("LLAMA_CPP_LIB_PATH"):
        return Path(os.environ["LLAMA_CPP_LIB_PATH"])
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise ImportError("llama-cpp-python is not installed")
    return Path(spec.origin).parent / "lib"


def available() -> bool:
    """Whether the installed llama-cpp-python was built with the RPC backend (without loading it)."""
    try:
        found = library_dir()
    except ImportError:
        return False
    return any(found.glob("libggml-rpc.*")) or any(found.glob("ggml-rpc.*"))


def _loaded(name: str) -> str | None:
    """The file of lib`name` this process has mapped already, if any."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if Path(path).name.startswith(f"lib{name}.so"):
                    return path
    except OSError:
        pass
    return None


def _library(name: str) -> ctypes.CDLL:
    """lib`name` as llama_cpp loaded it. Not another copy: a wheel stores libggml.so, .so.0 and .so.0.25.3 as
    three files (no symlinks), and a second copy of libggml has a device registry of its own, where an RPC
    device added is never seen by llama.cpp (the layers stayed on the CPU)."""
    import llama_cpp  # noqa: F401  (loads libllama, and the libggml it links)

    loaded = _loaded(name)
    if loaded:
        return ctypes.CDLL(loaded)
    found = sorted(library_dir().glob(f"lib{name}.so*")) or sorted(library_dir().glob(f"lib{name}.*"))
    if not found:
        raise RuntimeError(f"lib{name} is not among llama-cpp-python's libraries: reinstall it with "
                           f'CMAKE_ARGS="-DGGML_RPC=on" pip install --no-cache-dir --force-reinstall llama-cpp-python')
    return ctypes.CDLL(str(found[0]))


def _ggml() -> ctypes.CDLL:
    lib = _library("ggml")
    lib.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    lib.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_register.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_buffer_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_buffer_type.argtypes = [ctypes.c_void_p]
    return lib


def add_devices(endpoints: list[str]) -> list[str]:
    """Register one RPC device per "host:port" (each connects now: an unreachable one aborts the process);
    llama.cpp then places layers on them as on GPUs, in this order. Returns the device names."""
    ggml = _ggml()
    reg = ggml.ggml_backend_reg_by_name(b"RPC")
    if not reg:
        raise RuntimeError("llama-cpp-python was built without the RPC backend (GGML_RPC)")
    add = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(
        ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server"))
    for endpoint in endpoints:
        ggml.ggml_backend_register(add(endpoint.encode()))
    names = [ggml.ggml_backend_dev_name(ggml.ggml_backend_dev_get(i)).decode()
             for i in range(ggml.ggml_backend_dev_count())]
    return [name for name in names if name.startswith("RPC")]


class _Override(ctypes.Structure):  # llama_model_tensor_buft_override
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def on_this_cpu(pattern: str):
    """llama_model_params.tensor_buft_overrides keeping the tensors whose names match `pattern` (a regex) in
    this device's memory: a ctypes array, to keep alive as long as the model."""
    ggml = _ggml()
    cpu = ggml.ggml_backend_dev_buffer_type(ggml.ggml_backend_dev_by_type(CPU))
    return (_Override * 2)(_Override(pattern.encode(), cpu), _Override(None, None))


def serve(endpoint: str, threads: int, cache_dir: str | None) -> None:
    """Run ggml's RPC server on `endpoint` with this machine's CPU; never returns."""
    cpu = _ggml().ggml_backend_dev_by_type(CPU)
    rpc = _library("ggml-rpc")
    rpc.ggml_backend_rpc_start_server.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                                  ctypes.POINTER(ctypes.c_void_p)]
    rpc.ggml_backend_rpc_start_server(endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, 1,
                                      (ctypes.c_void_p * 1)(cpu))
    raise RuntimeError(f"ggml's RPC server could not start on {endpoint}")


@functools.cache
def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python's version: ggml's RPC protocol is only sure to match between the same ones."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def ensure() -> int:
    """Rebuild the installed llama-cpp-python (same version) with GGML_RPC on, if it was built without it.
    CMAKE_ARGS already set (Termux's -DGGML_OPENMP=OFF) are kept; --no-cache-dir, or pip would reuse the
    wheel it built before, without the backend."""
    if available():
        print("llama-cpp-python has the RPC backend")
        return 0
    import subprocess

    args = " ".join(a for a in os.environ.get("CMAKE_ARGS", "").split() if not a.startswith("-DGGML_RPC"))
    env = {**os.environ, "CMAKE_ARGS": f"{args} -DGGML_RPC=on".strip()}
    wanted = f"llama-cpp-python=={llama_cpp_version()}"
    print(f"rebuilding {wanted} with the RPC backend (CMAKE_ARGS={env['CMAKE_ARGS']}); this compiles llama.cpp",
          flush=True)
    return subprocess.call([sys.executable, "-m", "pip", "install", "--no-cache-dir", "--force-reinstall", "--no-deps",
                            wanted], env=env)


if __name__ == "__main__":
    if sys.argv[1:2] == ["check"]:
        sys.exit(0 if available() else 1)
    if sys.argv[1:2] == ["ensure"]:
        sys.exit(ensure())
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 5:
        die_with_parent()
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4] or None)
    sys.exit("usage: python -m edge_server.backends.ggml_rpc check | ensure | serve HOST:PORT THREADS CACHE_DIR")
