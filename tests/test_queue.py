"""The Huey queue: which storage, the in-process consumer, the blocking worker, Redis."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from huey import RedisHuey, SqliteHuey

from loyalty_ladder.config import Settings
from loyalty_ladder.errors import ConfigError
from loyalty_ladder.queue import make_huey, queue_location, run_consumer, start_consumer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'data' / 'ladder.db'}")


@pytest.fixture
def huey(settings) -> SqliteHuey:
    return make_huey(settings, name=f"test-{uuid.uuid4().hex[:8]}")


def _waiter(huey):
    """Register a task that records its argument and signals; return (task, seen, event)."""
    seen: list[object] = []
    done = threading.Event()

    @huey.task(name="mark")
    def mark(value: object) -> None:
        seen.append(value)
        done.set()

    return mark, seen, done


# ---------------------------------------------------------------- make_huey
def test_default_queue_is_a_sqlite_file_next_to_the_database(settings, tmp_path):
    h = make_huey(settings)
    assert isinstance(h, SqliteHuey) and h.name == "loyalty-ladder"
    assert Path(h.storage.filename) == tmp_path / "data" / "ladder-queue.db"
    assert Path(h.storage.filename).exists()  # SqliteHuey made its tables; the directory was created


def test_sqlite_queue_url(tmp_path):
    h = make_huey(Settings(queue_url=f"sqlite:///{tmp_path / 'q' / 'jobs.db'}"))
    assert isinstance(h, SqliteHuey) and Path(h.storage.filename) == tmp_path / "q" / "jobs.db"


def test_non_sqlite_database_puts_the_queue_in_the_working_directory():
    assert queue_location(Settings(database_url="postgresql+psycopg://u@h/db")) == ("sqlite", "ladder-queue.db")


def test_redis_queue_url():
    h = make_huey(Settings(queue_url="redis://127.0.0.1:6390/3"))  # no connection is made yet
    assert isinstance(h, RedisHuey)
    kwargs = h.storage.pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 3)


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:"])
def test_unusable_queue_url(url):
    with pytest.raises(ConfigError, match="unsupported queue"):
        make_huey(Settings(queue_url=url))


def test_immediate_mode_runs_tasks_at_once_and_touches_no_file(settings, tmp_path):
    h = make_huey(settings, immediate=True)
    mark, seen, _ = _waiter(h)
    mark(1)
    assert seen == [1]
    assert not (tmp_path / "data" / "ladder-queue.db").exists()
    with pytest.raises(ConfigError, match="immediate"):
        start_consumer(h)


def test_tasks_are_registered_on_the_instance_not_the_module(settings):
    a, b = make_huey(settings, name="a"), make_huey(settings, name="b")
    mark, _, _ = _waiter(a)
    assert mark.task_class in a._registry._registry.values()
    assert not b._registry._registry


# ---------------------------------------------------------------- in-process consumer
def test_in_process_consumer_runs_a_task_within_a_second(huey):
    mark, seen, done = _waiter(huey)
    handle = start_consumer(huey, poll_seconds=0.1)
    try:
        time.sleep(0.5)  # let the worker go idle: latency must not grow with idleness
        start = time.monotonic()
        mark("x")
        assert done.wait(1.0), "task not executed within 1 s"
        assert time.monotonic() - start < 0.5
        assert seen == ["x"]
    finally:
        assert handle.stop()


def test_polling_does_not_back_off_when_idle(huey):
    mark, _, done = _waiter(huey)
    with start_consumer(huey, poll_seconds=0.1) as handle:
        time.sleep(1.5)  # Huey's default back-off would be polling every ~0.3 s by now, growing to 10 s
        worker = handle.consumer.worker_threads[0][0]
        assert worker.delay == pytest.approx(0.1)
        start = time.monotonic()
        mark(1)
        assert done.wait(1.0)
        assert time.monotonic() - start < 0.35


def test_stop_stops_consuming(huey):
    mark, seen, _ = _waiter(huey)
    handle = start_consumer(huey, workers=2)
    assert handle.running
    assert handle.stop(timeout=5) is True
    assert not handle.running
    assert not any(t.is_alive() for t in handle.threads())
    mark("late")
    time.sleep(0.5)
    assert seen == []
    assert huey.pending_count() == 1  # still queued for the next consumer
    assert handle.stop() is True  # idempotent


def test_stop_waits_for_the_running_task(huey):
    finished = threading.Event()
    started = threading.Event()

    @huey.task(name="slow")
    def slow() -> None:
        started.set()
        time.sleep(0.5)
        finished.set()

    handle = start_consumer(huey)
    slow()
    assert started.wait(2)
    assert handle.stop(timeout=5)
    assert finished.is_set()


def test_scheduled_tasks_run(huey):
    """The scheduler thread runs too: delayed tasks (retries with a delay) are executed."""
    mark, seen, done = _waiter(huey)
    with start_consumer(huey):
        mark.schedule(args=("later",), delay=1)
        assert done.wait(4)
    assert seen == ["later"]


def test_start_consumer_leaves_signal_handlers_alone_and_works_off_the_main_thread(huey):
    mark, _, done = _waiter(huey)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    handles = []
    t = threading.Thread(target=lambda: handles.append(start_consumer(huey)))
    t.start()
    t.join(5)
    try:
        assert handles, "start_consumer failed outside the main thread"
        mark(1)
        assert done.wait(1.0)
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        for h in handles:
            h.stop()


def test_bad_consumer_arguments(huey):
    with pytest.raises(ConfigError):
        start_consumer(huey, workers=0)
    with pytest.raises(ConfigError):
        start_consumer(huey, poll_seconds=0)


def test_run_consumer_refuses_other_threads(huey):
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_consumer(huey)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    assert errors and "main thread" in str(errors[0])


# ---------------------------------------------------------------- blocking worker (ladder worker)
# Huey names a task after its function's module: both processes import the tasks from here.
TASKS_MODULE = """
from pathlib import Path

def register(huey, out):
    @huey.task(name="touch")
    def touch(text):
        Path(out).write_text(text)
    return touch
"""

WORKER_SCRIPT = """
import sys
from loyalty_ladder.config import Settings
from loyalty_ladder.queue import make_huey, run_consumer
import ladder_test_tasks

queue, out = sys.argv[1], sys.argv[2]
huey = make_huey(Settings(queue_url="sqlite:///" + queue), name="worker-test")
ladder_test_tasks.register(huey, out)
run_consumer(huey, workers=1, poll_seconds=0.1)
print("exited cleanly")
"""


def test_run_consumer_processes_tasks_and_stops_on_sigint(tmp_path, monkeypatch):
    (tmp_path / "ladder_test_tasks.py").write_text(textwrap.dedent(TASKS_MODULE))
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER_SCRIPT))
    monkeypatch.syspath_prepend(str(tmp_path))
    import ladder_test_tasks

    queue, out = tmp_path / "queue.db", tmp_path / "out.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(queue), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        producer = make_huey(Settings(queue_url=f"sqlite:///{queue}"), name="worker-test")
        touch = ladder_test_tasks.register(producer, out)
        touch("hello")  # only enqueued here: this instance has no consumer
        deadline = time.monotonic() + 10  # includes the interpreter's start-up
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.read_text() == "hello"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "exited cleanly" in stdout


# ---------------------------------------------------------------- Redis
@pytest.mark.redis
def test_redis_queue_with_the_in_process_consumer(redis_url):
    name = f"ladder-test-{uuid.uuid4().hex[:8]}"
    huey = make_huey(Settings(queue_url=redis_url), name=name)
    assert isinstance(huey, RedisHuey)
    try:
        huey.storage.conn.ping()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not here"
        pytest.skip(f"Redis at {redis_url} unreachable: {exc}")
    mark, seen, done = _waiter(huey)
    handle = start_consumer(huey)
    try:
        time.sleep(0.3)
        mark("via-redis")
        assert done.wait(1.0)
        assert seen == ["via-redis"]
    finally:
        handle.stop()
        huey.flush()  # only this instance's keys (its queue, schedule and results)
    assert not huey.storage.conn.keys(f"*{name}*")


@pytest.mark.redis
def test_a_redis_queue_that_refuses_the_login_fails_at_start_with_one_masked_line(tmp_path, redis_url):
    """Not a traceback per poll once the consumer runs, and never the password."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    url = redis_url.replace("redis://", "redis://nobody:wrong-pw@", 1)
    env = {**os.environ, "LADDER_QUEUE_URL": url, "LADDER_ADMIN_TOKEN": "t",
           "LADDER_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}"}
    ladder = str(Path(sys.executable).with_name("ladder"))
    done = subprocess.run([ladder, "worker"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert "cannot use the queue at redis://nobody:***@" in done.stderr
    assert "wrong-pw" not in done.stdout + done.stderr and "Traceback" not in done.stderr
