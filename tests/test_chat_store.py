"""The chat store under concurrency and on awkward filesystems: a delete or clear wins over an answer in flight,
the chat limit holds for concurrent first messages, and ids that differ only in case keep apart."""
from __future__ import annotations

import threading
import time

import pytest
import requests
from conftest import LiveServer

from edge_server.chats import ChatStore, chat_id_of, file_stem
from edge_server.errors import EdgeError


def history(url: str, chat_id: str) -> dict:
    return requests.get(f"{url}/chat/getchathistory", params={"model_name": "slow", "chat_id": chat_id}).json()


def answer_while(url: str, chat_id: str, act) -> None:
    """Stream an answer for the chat, do `act()` once it has begun, then read the answer to its end."""
    r = requests.post(f"{url}/generate/fromtext", stream=True, timeout=60, json={
        "model_name": "slow", "prompt": "a long answer please", "chat_id": chat_id, "max_new_tokens": 60})
    pieces = r.iter_content(chunk_size=None)
    assert next(pieces)
    act()
    assert b"".join(pieces) is not None  # to its end
    deadline = time.time() + 10
    while history(url, chat_id)["answering"]:
        assert time.time() < deadline
        time.sleep(0.05)


def test_deleting_a_chat_while_it_answers_does_not_bring_it_back(slow_live):
    """The answer used to write the exchange into a new file when it finished: the chat came back."""
    url = slow_live.url
    assert requests.post(f"{url}/chat/addsystemprompt", json={"model_name": "slow", "chat_id": "gone",
                                                              "system_prompt": "Be brief."}).ok
    answer_while(url, "gone", lambda: requests.delete(f"{url}/chat/delete", json={
        "model_name": "slow", "chat_id": "gone"}).raise_for_status())
    assert history(url, "gone")["turns"] == [] and history(url, "gone")["system_prompt"] is None
    chats = requests.get(f"{url}/chat/list", params={"model_name": "slow"}).json()["chats"]
    assert "gone" not in [c["chat_id"] for c in chats]


def test_clearing_a_chat_while_it_answers_wins(slow_live):
    url = slow_live.url
    assert requests.post(f"{url}/chat/addsystemprompt", json={"model_name": "slow", "chat_id": "kept",
                                                              "system_prompt": "Be brief."}).ok
    answer_while(url, "kept", lambda: None)
    assert len(history(url, "kept")["turns"]) == 2
    answer_while(url, "kept", lambda: requests.delete(f"{url}/chat/clearchat", json={
        "model_name": "slow", "chat_id": "kept"}).raise_for_status())
    assert history(url, "kept")["turns"] == [] and history(url, "kept")["system_prompt"] == "Be brief."


def test_an_answer_begun_after_a_clear_is_stored(tmp_path):
    store = ChatStore(tmp_path)
    before = store.reserve("m", "c", 10)
    store.clear("m", "c")
    after = store.reserve("m", "c", 10)
    store.add_exchange("m", "c", "old question", "old answer", since=before)
    store.add_exchange("m", "c", "new question", "new answer", since=after)
    assert [t["content"] for t in store.get("m", "c")["turns"]] == ["new question", "new answer"]
    before.release(), after.release(), before.release()  # twice is harmless
    assert store._reserved == {}


def test_concurrent_first_messages_do_not_pass_the_chat_limit(make_app, slow_gguf, data_dir):
    """The limit was checked when an answer began and written when it ended: 12 first messages at once to new
    chats of a model with 250 of 256 made 262 chats."""
    app = make_app({"slow": {"path": str(slow_gguf), "n_ctx": 512}}, max_chats_per_model=20, threads=24,
                   queue_size=16)
    store = app.extensions["edge_server"].chats
    for i in range(14):
        store.add_exchange("slow", f"old{i}", "q", "a")
    assert app.test_client().post("/model/launch", json={"model_name": "slow"}).status_code == 200
    server = LiveServer(app)
    try:
        start, statuses = threading.Barrier(12), []

        def first_message(i):
            start.wait()
            r = requests.post(f"{server.url}/generate/fromtext", timeout=120, json={
                "model_name": "slow", "prompt": "hello", "chat_id": f"new{i}", "max_new_tokens": 20})
            statuses.append(r.status_code if r.status_code == 200 else r.json()["code"])

        clients = [threading.Thread(target=first_message, args=(i,)) for i in range(12)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    finally:
        server.close()
    assert sorted(statuses, key=str) == [200] * 6 + ["too_many_chats"] * 6
    assert len(list((data_dir / "chats" / "slow").glob("*.json"))) == 20


def test_a_system_prompt_for_a_new_chat_counts_against_the_limit(tmp_path):
    store = ChatStore(tmp_path, max_chats=2)
    held = store.reserve("m", "one", 1)
    store.set_system_prompt("m", "two", "x")
    with pytest.raises(EdgeError) as refused:
        store.set_system_prompt("m", "three", "x")
    assert refused.value.code == "too_many_chats"
    held.release()
    store.set_system_prompt("m", "three", "x")  # the place given back is free again


def test_chat_ids_differing_in_case_have_files_apart_on_any_filesystem(tmp_path):
    """'A' and 'a' were A.json and a.json: one file on FAT, exFAT or Android's shared storage."""
    store = ChatStore(tmp_path)
    for chat_id in ("A", "a", "Trip", "tRIP", "trip", "x-Y_z9"):
        store.add_exchange("m", chat_id, f"question to {chat_id}", "answer")
    names = [p.name for p in (tmp_path / "m").iterdir()]
    assert len({name.lower() for name in names}) == len(names) == 6
    fresh = ChatStore(tmp_path)  # read back from disk, not the cache
    for chat_id in ("A", "a", "Trip", "tRIP", "trip", "x-Y_z9"):
        assert fresh.get("m", chat_id)["turns"][0]["content"] == f"question to {chat_id}"
    assert sorted(c["chat_id"] for c in fresh.summaries("m")) == sorted(["A", "a", "Trip", "tRIP", "trip", "x-Y_z9"])
    assert all(chat_id_of(file_stem(c)) == c for c in ("A", "a", "Trip", "Z-z_0"))
    assert chat_id_of("Trip") is None and chat_id_of("^^a") is None and chat_id_of("a^") is None


def test_chat_files_named_the_old_way_are_renamed(tmp_path):
    store = ChatStore(tmp_path)
    store.add_exchange("m", "plain", "q", "a")
    (tmp_path / "m" / "Trip.json").write_text('{"system_prompt": null, "turns": [{"role": "user", "content": "q"},'
                                              ' {"role": "assistant", "content": "a"}]}')
    (tmp_path / "m" / "Trip.json.broken-1").write_text("{")
    fresh = ChatStore(tmp_path)
    assert len(fresh.get("m", "Trip")["turns"]) == 2 and fresh.set_aside("m", "Trip") == ["^trip.json.broken-1"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["^trip.json", "^trip.json.broken-1", "plain.json"]
