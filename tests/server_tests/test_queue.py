"""The persistent queue on real SQLite: atomic claims, heartbeats, requeues, cancels."""

from __future__ import annotations

import threading
import time

import pytest

from service.server.queue import StudyExists, StudyQueue


@pytest.fixture
def queue(sqlite_url: str) -> StudyQueue:
    q = StudyQueue(sqlite_url).setup()
    yield q
    q.close()


def spec(name: str) -> dict:
    return {"name": name, "objective": "toy_objectives:quadratic", "direction": "minimize"}


def test_submit_refuses_a_taken_name_in_the_queue_or_the_storage(queue: StudyQueue):
    import optuna

    queue.submit("a", spec("a"), 3)
    with pytest.raises(StudyExists):
        queue.submit("a", spec("a"), 3)
    optuna.create_study(study_name="b[optimizer=adam]", storage=queue.url).set_user_attr(
        "spec_name", "b")
    with pytest.raises(StudyExists):
        queue.submit("b", spec("b"), 3)
    assert [e.name for e in queue.entries()] == ["a"]


def test_each_study_is_claimed_once_under_contention(queue: StudyQueue):
    for i in range(6):
        queue.submit(f"s{i}", spec(f"s{i}"), 1)
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(wid: str) -> None:
        while (entry := queue.claim(wid)) is not None:
            with lock:
                claimed.append((entry.name, wid))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(name for name, _ in claimed) == [f"s{i}" for i in range(6)]
    assert all(queue.get(name).worker_id == wid for name, wid in claimed)


def test_stale_heartbeat_requeues_and_the_old_worker_loses_its_claim(queue: StudyQueue):
    queue.submit("s", spec("s"), 1)
    assert queue.claim("w1").state == "running"
    assert queue.beat("s", "w1")
    assert queue.requeue_stale(60) == []  # it just beat
    time.sleep(1.1)
    assert queue.requeue_stale(1) == ["s"]
    assert queue.get("s").state == "queued" and queue.get("s").worker_id is None
    assert not queue.beat("s", "w1")  # the old worker finds out at its next beat
    assert queue.claim("w2").worker_id == "w2"
    assert not queue.finish("s", "w1", "done")  # and cannot finish what is not its own
    assert queue.finish("s", "w2", "done") and queue.get("s").state == "done"


def test_cancel_queued_at_once_running_on_request_and_dead_worker_cancelled(queue: StudyQueue):
    queue.submit("q", spec("q"), 1)
    assert queue.request_cancel("q").state == "cancelled"
    queue.submit("r", spec("r"), 1)
    queue.claim("w1")
    entry = queue.request_cancel("r")
    assert entry.state == "running" and entry.cancel_requested and queue.cancel_requested("r")
    # Its worker dies before it sees the request: the study is cancelled, not run again.
    assert queue.requeue_worker("w1") == ["r"]
    assert queue.get("r").state == "cancelled"
    assert queue.claim("w2") is None
    assert queue.request_cancel("nothing") is None


def test_resume_requeues_only_cancelled_and_failed(queue: StudyQueue):
    queue.submit("c", spec("c"), 1)
    queue.request_cancel("c")
    entry, resumed = queue.resume("c")
    assert resumed and entry.state == "queued" and not entry.cancel_requested
    assert queue.resume("c")[1] is False  # queued: left as it is
    assert queue.claim("w1").name == "c"
    assert queue.resume("c")[1] is False  # running
    queue.finish("c", "w1", "failed", "boom")
    entry, resumed = queue.resume("c")
    assert resumed and entry.error is None and entry.worker_id is None
    assert queue.resume("nothing") == (None, False)


def test_the_cluster_record_is_kept_per_ray_address(queue: StudyQueue):
    assert queue.cluster("127.0.0.1:6379") is None and queue.cluster(None) is None
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0, "GPU": 0.0}}]
    queue.record_cluster("127.0.0.1:6379", nodes)
    queue.record_cluster("127.0.0.1:6379", nodes * 2)  # a node joined: the record follows
    assert queue.cluster("127.0.0.1:6379") == nodes * 2
    assert queue.cluster("10.0.0.1:6379") is None


def test_resume_and_cluster_record_on_postgresql(pg_url: str):
    queue = StudyQueue(pg_url).setup()
    try:
        test_resume_requeues_only_cancelled_and_failed(queue)
        test_the_cluster_record_is_kept_per_ray_address(queue)
    finally:
        queue.close()
