"""Disk checks before and during a download, on a real small filesystem (a 40 MB tmpfs as the data dir)."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
from gguf_factory import write_tiny_llama

REPO, FILE = "test-org/big-GGUF", "big.gguf"


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB filesystem (tmpfs; needs root, as in CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("mounting a tmpfs failed; the disk tests need root")
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def catalog(disk, models: dict):
    data = disk / "data"
    data.mkdir()
    (data / "models.json").write_text(json.dumps(models))
    return data


@pytest.fixture
def big_model(tmp_path):
    model = write_tiny_llama(tmp_path / "big.gguf", n_layers=80)  # about 14 MB
    return model


def test_a_download_that_cannot_fit_is_refused_before_a_byte_is_written(make_app, fake_hub, small_disk, big_model):
    announced = big_model.read_bytes() * 4  # more than the 40 MB disk holds
    fake_hub.add(REPO, FILE, announced)
    data = catalog(small_disk, {"big": {"repo_id": REPO, "filename": FILE}})
    app = make_app(None, data_dir=data, hf_endpoint=fake_hub.url)
    r = app.test_client().post("/model/launch", json={"model_name": "big"})
    assert r.status_code == 507 and r.json["code"] == "insufficient_storage", r.json
    assert f"needs {len(announced) / 1e6:.0f} MB more on disk" in r.json["detail"] and "free" in r.json["detail"]
    assert fake_hub.gets(FILE) == []  # only the HEAD for its size: not a byte fetched
    assert list((data / "models").rglob("*.part")) == []


def test_a_disk_that_fills_during_the_download_is_507_and_the_part_resumes(make_app, fake_hub, small_disk,
                                                                           big_model):
    fake_hub.add(REPO, FILE, big_model.read_bytes())
    fake_hub.delay = 0.02  # about 4 s for 14 MB
    data = catalog(small_disk, {"big": {"repo_id": REPO, "filename": FILE, "n_ctx": 256}})
    app = make_app(None, data_dir=data, hf_endpoint=fake_hub.url, disk_margin_bytes=1 << 20)
    answers = []
    launch = threading.Thread(target=lambda: answers.append(
        app.test_client().post("/model/launch", json={"model_name": "big"})))
    launch.start()
    part = data / "models" / "big" / (FILE + ".part")
    deadline = time.time() + 30
    while not (part.exists() and part.stat().st_size > 2 << 20):
        assert time.time() < deadline
        time.sleep(0.05)
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # another program takes the rest of the disk
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    launch.join(60)
    r = answers[0]
    assert r.status_code == 507 and r.json["code"] == "insufficient_storage", r.json
    assert "filled up" in r.json["detail"] and "network" not in r.json["detail"].lower()
    kept = part.stat().st_size
    assert kept > 2 << 20  # kept for resume, as the README says
    filler.unlink()
    r = app.test_client().post("/model/launch", json={"model_name": "big"})
    assert r.status_code == 200, r.json
    assert fake_hub.gets(FILE)[-1] == f"bytes={kept}-"
    assert (data / "models" / "big" / FILE).read_bytes() == big_model.read_bytes()


def test_a_read_only_data_dir_is_a_storage_error_not_the_network(make_app, fake_hub, small_disk, big_model):
    fake_hub.add(REPO, FILE, big_model.read_bytes())
    data = catalog(small_disk, {"big": {"repo_id": REPO, "filename": FILE}})
    (data / "models").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(data / "models")], check=True)
    try:
        app = make_app(None, data_dir=data, hf_endpoint=fake_hub.url)
        r = app.test_client().post("/model/launch", json={"model_name": "big"})
        assert r.status_code == 500 and r.json["code"] == "storage_error", r.json
        assert "Read-only" in r.json["detail"] and "network" not in r.json["detail"].lower()
    finally:
        subprocess.run(["umount", str(data / "models")], check=False)
