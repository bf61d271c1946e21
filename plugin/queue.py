"""The Huey job queue: SQLite by default (embedded), Redis for scale-out; and its consumer.

No task is defined here and there is no module-level Huey: the service module registers its
tasks on the instance :func:`make_huey` returns (``huey.task()(fn)``,
``huey.periodic_task(crontab(...))(fn)``).  The database, not the queue, is the source of
truth: the lanes read their work from it (see lanes.py), so results are not stored by default.

Two ways to consume:

* :func:`start_consumer` — inside the current process, in background threads, for
  ``ladder serve`` (web server in the main thread).  Huey's ``Consumer.start()`` installs
  SIGINT/SIGTERM/SIGHUP handlers, which only the main thread may do and which belong to the
  web server there; our :class:`_EmbeddedConsumer` leaves signals alone, and the returned
  :class:`ConsumerHandle` stops it.
* :func:`run_consumer` — blocking, in the main thread, with Huey's normal signal handling
  (SIGINT: graceful stop, SIGTERM: immediate stop, SIGHUP: restart), for ``ladder worker``.

Polling: an idle Huey worker sleeps ``initial_delay`` and multiplies it by ``backoff`` up to
``max_delay`` (10 s by default) between polls of a non-blocking storage such as SQLite.  An
accepted event must be applied within 1 s (p95), so we poll at a constant ``poll_seconds``
(backoff 1, max_delay = poll_seconds).  Redis dequeues block (``BRPOP``), so it needs no polling.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Self

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer

from .config import Settings, default_queue_file
from .errors import ConfigError
from .redact import mask_url

log = logging.getLogger(__name__)

DEFAULT_NAME = "loyalty-ladder"


def queue_location(settings: Settings) -> tuple[str, str]:
    """``("sqlite", file path)`` or ``("redis", url)`` for the settings' queue."""
    url = settings.queue_url
    if url is None:
        return "sqlite", str(default_queue_file(settings.database_url))
    if url.startswith(("redis://", "rediss://")):
        return "redis", url
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            return "sqlite", path
    raise ConfigError(
        f"queue_url: unsupported queue {url!r}: use sqlite:///path/to/queue.db or redis://host:port/db",
        {"queue_url": [url]},
    )


def make_huey(settings: Settings, name: str = DEFAULT_NAME, immediate: bool = False, results: bool = False) -> Huey:
    """The Huey instance for ``settings``; ``immediate=True`` runs tasks synchronously in memory
    (tests) and touches neither the queue file nor Redis."""
    kind, where = queue_location(settings)
    if kind == "redis":
        return RedisHuey(name, url=where, immediate=immediate, results=results)
    if not immediate:
        # SqliteHuey creates its tables at construction; the directory must exist by then.
        Path(where).parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(name, filename=where, immediate=immediate, results=results)


def check_reachable(huey: Huey, settings: Settings) -> None:
    """Fail at start, with one clear line, when a Redis queue cannot be reached or refuses our
    login — not with a traceback per poll once the consumer runs.  SQLite queues are files."""
    if huey.immediate or not isinstance(huey, RedisHuey):
        return
    from redis.exceptions import RedisError

    try:
        huey.storage.conn.ping()
    except RedisError as exc:
        where = mask_url(settings.queue_url or "")
        raise ConfigError(f"cannot use the queue at {where}: {type(exc).__name__}: {exc}",
                          {"queue_url": [where]}) from None


def _consumer_kwargs(workers: int, poll_seconds: float, periodic: bool) -> dict[str, object]:
    if workers < 1:
        raise ConfigError(f"the queue needs at least one worker, got {workers}")
    if not 0 < poll_seconds <= 60:
        raise ConfigError(f"poll_seconds must be more than 0 and at most 60, got {poll_seconds}")
    return {
        "workers": workers,
        "periodic": periodic,
        "initial_delay": poll_seconds,
        "backoff": 1.0,
        "max_delay": poll_seconds,
        "worker_type": "thread",
        "check_worker_health": True,
    }


class _EmbeddedConsumer(Consumer):
    """A Huey consumer that never touches signal handlers (they belong to the host process)."""

    def _set_signal_handlers(self) -> None:
        pass


class ConsumerHandle:
    """A running in-process consumer.  ``stop()`` finishes the tasks in progress and returns."""

    def __init__(self, consumer: Consumer, health_interval: float = 10.0):
        self._consumer = consumer
        self._stopped = threading.Event()
        self._health_interval = health_interval
        self._monitor = threading.Thread(target=self._watch, name="huey-monitor", daemon=True)

    @property
    def consumer(self) -> Consumer:
        return self._consumer

    def _start(self) -> None:
        self._consumer.start()
        self._monitor.start()

    def _watch(self) -> None:
        # What Consumer.run() does in its main loop: restart workers that died.
        while not self._stopped.wait(self._health_interval):
            try:
                self._consumer.check_worker_health()
            except Exception:  # the monitor must outlive any one failure
                log.exception("queue consumer health check failed")

    @property
    def running(self) -> bool:
        return not self._stopped.is_set()

    def threads(self) -> list[threading.Thread]:
        """The worker and scheduler threads (for tests and diagnostics)."""
        return [t for _, t in self._consumer.worker_threads] + [self._consumer.scheduler]

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop consuming; wait up to ``timeout`` seconds for running tasks.  True when every
        thread has ended.  Idempotent."""
        if self._stopped.is_set():
            return not any(t.is_alive() for t in self.threads())
        self._stopped.set()
        self._consumer.shutdown_timeout = timeout
        self._consumer.stop(graceful=True)
        self._monitor.join(timeout=1.0)
        self._consumer.huey.notify_interrupted_tasks()
        return not any(t.is_alive() for t in self.threads())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_consumer(
    huey: Huey, workers: int = 1, poll_seconds: float = 0.1, periodic: bool = True
) -> ConsumerHandle:
    """Run a consumer in background threads of this process (any thread may call this)."""
    if huey.immediate:
        raise ConfigError("an immediate-mode Huey runs tasks as they are called; it has no queue to consume")
    handle = ConsumerHandle(_EmbeddedConsumer(huey, **_consumer_kwargs(workers, poll_seconds, periodic)))
    handle._start()
    return handle


def run_consumer(huey: Huey, workers: int = 1, poll_seconds: float = 0.1, periodic: bool = True) -> None:
    """Consume until a signal stops it (blocking; main thread only, as Huey's consumer requires)."""
    if huey.immediate:
        raise ConfigError("an immediate-mode Huey runs tasks as they are called; it has no queue to consume")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("run_consumer() installs signal handlers: call it from the main thread")
    Consumer(huey, **_consumer_kwargs(workers, poll_seconds, periodic)).run()
