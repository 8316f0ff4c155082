"""The worker that keeps server calls off Slicer's GUI thread (standard library; no Slicer needed).

The main thread here plays Slicer's GUI thread: it submits, then polls as the panel's timer does.
"""

import threading
import time

import pytest

from LoRISLib.worker import Worker, WorkerBusy

MAIN = threading.main_thread()


def test_work_runs_off_the_main_thread_and_apply_and_done_on_it():
    worker = Worker("test")
    seen = {}

    def work(report):
        seen["work"] = threading.current_thread()
        report("step one")
        return 41

    def apply(value):
        seen["apply"] = threading.current_thread()
        return value + 1

    steps = []
    task = worker.submit("answer", work, apply=apply, done=lambda r: seen.update(done=(r, threading.current_thread())),
                         progress=lambda t: steps.append((t.step, threading.current_thread())))
    assert worker.busy and worker.current is task
    worker.wait(10)
    assert seen["work"] is not MAIN and seen["work"].name == "test: answer"
    assert seen["apply"] is MAIN and seen["done"] == (42, MAIN)
    assert steps == [("step one", MAIN)] and not worker.busy


def test_nothing_reaches_the_main_thread_until_it_polls():
    worker = Worker()
    release = threading.Event()
    applied = []

    def work(report):
        release.wait(10)
        return "answer"

    worker.submit("slow", work, apply=applied.append)
    time.sleep(0.05)
    assert worker.poll() == 0 and applied == [] and worker.busy
    release.set()
    worker.current.thread.join(10)
    assert applied == []  # finished, but not applied before the main thread polls
    worker.poll()
    assert applied == ["answer"] and not worker.busy


def test_one_task_at_a_time():
    worker = Worker()
    release = threading.Event()
    worker.submit("first", lambda report: release.wait(10))
    with pytest.raises(WorkerBusy, match="'first' is still running"):
        worker.submit("second", lambda report: None)
    release.set()
    worker.wait(10)
    worker.submit("second", lambda report: None)
    worker.wait(10)


def test_errors_in_work_or_apply_reach_failed_on_the_main_thread():
    worker = Worker()
    failures = []

    def work(report):
        raise ValueError("bad box")

    worker.submit("fails", work, failed=lambda e: failures.append((str(e), threading.current_thread())))
    worker.wait(10)
    worker.submit("apply fails", lambda report: 1, apply=lambda v: 1 / 0,
                  failed=lambda e: failures.append((type(e).__name__, threading.current_thread())))
    worker.wait(10)
    assert failures == [("bad box", MAIN), ("ZeroDivisionError", MAIN)]


def test_cancel_aborts_the_work_applies_nothing_and_frees_the_worker():
    worker = Worker()
    aborted = threading.Event()
    called = []

    def work(report):
        aborted.wait(10)  # a blocking request, ended by abort (the client closing its socket)
        raise ConnectionError("closed")

    task = worker.submit("run", work, apply=called.append, done=called.append, failed=called.append,
                         abort=aborted.set)
    assert worker.cancel() and task.cancelled and not worker.busy
    task.thread.join(5)
    assert not task.thread.is_alive()
    worker.poll()
    assert called == []  # neither apply, done nor failed
    worker.submit("next", lambda report: "ok", done=called.append)
    worker.wait(10)
    assert called == ["ok"] and not worker.cancel()


def test_wait_gives_up_after_its_timeout():
    worker = Worker()
    release = threading.Event()
    worker.submit("stuck", lambda report: release.wait(10))
    with pytest.raises(TimeoutError, match="'stuck' still runs"):
        worker.wait(0.2)
    release.set()
    worker.wait(10)
