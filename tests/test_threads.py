"""The default thread count: one per performance core, read from CPU topologies like a phone's, a Pi's and a
desktop's (sysfs fixtures), and the one a real server process picks and uses here."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests
from conftest import ServerProcess

from edge_server.cpu import default_threads


def sysfs(root: Path, cpus: list[tuple[int, int | None]], offline=()) -> Path:
    """cpus: (core_id, max kHz or None) for cpu0, cpu1, ...; CPUs with the same core_id and frequency are
    hyper-thread siblings. core_id may repeat across clusters (arm64 kernels since 6.0 number each from 0)."""
    siblings = {}
    for n, key in enumerate(cpus):
        siblings.setdefault(key, []).append(str(n))
    for n, (core, freq) in enumerate(cpus):
        cpu = root / f"cpu{n}"
        (cpu / "topology").mkdir(parents=True)
        (cpu / "topology" / "core_id").write_text(f"{core}\n")
        (cpu / "topology" / "physical_package_id").write_text("0\n")
        (cpu / "topology" / "thread_siblings_list").write_text(",".join(siblings[(core, freq)]) + "\n")
        if freq:
            (cpu / "cpufreq").mkdir()
            (cpu / "cpufreq" / "cpuinfo_max_freq").write_text(f"{freq}\n")
        if n:
            (cpu / "online").write_text("0\n" if n in offline else "1\n")
    return root


@pytest.mark.parametrize("name, cpus, expected", [
    ("phone 2+6", [(n, 1_800_000) for n in range(6)] + [(6, 2_400_000), (7, 2_400_000)], 2),
    ("phone 1+3+4", [(n, 1_800_000) for n in range(4)] + [(n, 2_400_000) for n in range(4, 7)] + [(7, 3_000_000)], 4),
    ("Snapdragon 8 Gen 2, kernel 6.1: 3 little, 4 mid, 1 prime, core ids from 0 per cluster",
     [(n, 2_016_000) for n in range(3)] + [(n, 2_803_000) for n in range(4)] + [(0, 3_187_000)], 5),
    ("Raspberry Pi 5", [(n, 2_400_000) for n in range(4)], 4),
    ("desktop with two favoured cores 200 MHz faster", [(n, 4_600_000) for n in range(6)] + [(6, 4_800_000),
                                                                                          (7, 4_800_000)], 8),
    ("desktop 4 cores, 8 threads", [(n % 4, None) for n in range(8)], 4),
    ("VM, 2 cores", [(0, None), (1, None)], 2),
])
def test_performance_cores(tmp_path, name, cpus, expected):
    threads, why = default_threads(sysfs(tmp_path, cpus), allowed=set(range(len(cpus))))
    assert threads == expected, (name, why)


def test_only_cpus_this_process_may_use_and_online_ones_count(tmp_path):
    pi = sysfs(tmp_path, [(n, 1_500_000) for n in range(4)], offline={3})
    assert default_threads(pi, allowed={0, 1, 2, 3})[0] == 3
    assert default_threads(pi, allowed={0, 1})[0] == 2  # a container's cpuset
    assert default_threads(tmp_path / "nothing", allowed={0, 1, 2})[0] == 3  # no sysfs: what may be used


def test_a_server_picks_and_uses_the_default(tmp_path, tiny_gguf):
    server = ServerProcess(tmp_path / "data", {"tiny": {"path": str(tiny_gguf), "n_ctx": 256}})
    try:
        expected, why = default_threads()
        assert f"models compute with {expected} threads ({why})" in server.output()
        requests.post(f"{server.url}/model/launch", json={"model_name": "tiny"}, timeout=60).raise_for_status()
        assert requests.get(f"{server.url}/model/status", params={"model_name": "tiny"}).json()["n_threads"] == expected
    finally:
        server.close()
    server = ServerProcess(tmp_path / "data", {}, "--n-threads", "1")
    try:
        assert "models compute with 1 threads (set by --n-threads or EDGE_N_THREADS)" in server.output()
    finally:
        server.close()
