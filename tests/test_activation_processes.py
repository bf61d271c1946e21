"""An activation made in one process is used by every other within seconds, with no signal:
each process's registry re-reads a shop's timeline from the database when its rows changed.

Real processes: ``ladder rules activate`` in a subprocess against this process's registry (SQLite
and PostgreSQL), and gunicorn with two web workers beside a separate ``ladder worker --lanes live``
on one database (PostgreSQL when ``LADDER_TEST_POSTGRES_URL`` is set, else one SQLite file)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from loyalty_ladder import rulefile, store
from loyalty_ladder.programmes import ProgrammeRegistry
from loyalty_ladder.shop import ShopConfig

from .conftest import ROOT

BIN = Path(sys.executable).parent
LADDER = str(BIN / "ladder")
GUNICORN = BIN / "gunicorn"
TOKEN = "processes-token"
DEFAULT_TEXT = (ROOT / "rules" / "ladder.yaml").read_text()
LONGER = DEFAULT_TEXT.replace("refund_window_days: 30", "refund_window_days: 31")
#: how long another process may take to use an activation (the registry polls every 2 s)
PICK_UP_SECONDS = 15

BOTH = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
#: the deployment the README describes: PostgreSQL when the tests have one, else one SQLite file
DEPLOYED = pytest.mark.parametrize(
    "backend", ["postgres" if os.environ.get("LADDER_TEST_POSTGRES_URL") else "sqlite"], indirect=True)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LADDER_") or k.startswith("LADDER_TEST")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rules_dir(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "ladder.yaml").write_text(DEFAULT_TEXT)
    return rules


@BOTH
def test_an_activation_by_another_process_is_picked_up_within_seconds(database_url, rules_dir, tmp_path):
    db = store.make_engine(database_url)
    store.upgrade(db)
    registry = ProgrammeRegistry(rules_dir, poll=0.2)
    shop = ShopConfig(id="default", platform="generic")
    first = registry.bootstrap(db, shop).active
    assert registry.active(db, shop)[0].version == first  # cached in this process
    (rules_dir / "ladder.yaml").write_text(LONGER)
    wanted = rulefile.load_programme(rules_dir).version
    done = subprocess.run([LADDER, "rules", "activate", str(rules_dir), "--author", "ops", "--reason", "window"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                          env=clean_env(LADDER_DATABASE_URL=database_url, LADDER_RULES=str(rules_dir)))
    assert done.returncode == 0, done.stderr
    assert f"activated version {wanted}" in done.stdout
    deadline = time.monotonic() + 5
    while registry.active(db, shop)[0].version != wanted:
        assert time.monotonic() < deadline, "the activation of another process was not picked up within 5 s"
        time.sleep(0.05)
    assert [s.version for s in registry.timeline(db, shop).segments] == [first, wanted]
    db.dispose()


#: the app as gunicorn runs it, answering with the worker's pid so a test knows who answered
PID_APP = """\
import os

from loyalty_ladder.app import create_app

_app = create_app()


def app(environ, start_response):
    def with_pid(status, headers, exc_info=None):
        return start_response(status, [*headers, ("X-Worker-Pid", str(os.getpid()))], exc_info)

    return _app(environ, with_pid)
"""


class Processes:
    """Processes started by a test, stopped (by their own pid) at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGTERM
                proc.kill()
                proc.wait()


def wait_for(predicate, what: str, seconds: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {seconds} s; logs:\n" + "\n".join(
                f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists()))
        time.sleep(0.1)


@pytest.mark.slow
@DEPLOYED
def test_gunicorn_workers_and_a_queue_worker_use_an_api_activation_within_seconds(database_url, rules_dir, tmp_path):
    assert GUNICORN.exists(), "gunicorn is missing: install the [server] extra"
    env = clean_env(LADDER_DATABASE_URL=database_url, LADDER_RULES=str(rules_dir), LADDER_ADMIN_TOKEN=TOKEN,
                    LADDER_QUEUE_URL=f"sqlite:///{tmp_path / 'queue.db'}", LADDER_LOG_LEVEL="WARNING")
    (tmp_path / "pid_app.py").write_text(PID_APP)
    worker_log, web_log = tmp_path / "worker.log", tmp_path / "web.log"
    logs = [worker_log, web_log]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    processes = Processes()
    try:
        # the worker starts first: its start-up activates the rules directory (the database has no version)
        worker = processes.start([LADDER, "worker", "--lanes", "live"], env, tmp_path, worker_log)
        wait_for(lambda: "programme version" in worker_log.read_text(), "the worker's start line", 30, logs)
        first = rulefile.load_programme(rules_dir).version
        assert f"programme version {first}" in worker_log.read_text()
        processes.start([str(GUNICORN), "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path),
                         "--graceful-timeout", "5", "pid_app:app"], env, tmp_path, web_log)

        def serving() -> list[tuple[str, str]]:
            """Four requests at once, so both workers answer: (pid, version it decides with)."""
            def one(_: int) -> tuple[str, str]:
                answer = requests.get(f"{base}/api/v1/shops/default/programme", headers=auth, timeout=5)
                assert answer.status_code == 200, answer.text
                return answer.headers["X-Worker-Pid"], answer.json()["serving"]
            with ThreadPoolExecutor(4) as pool:
                return list(pool.map(one, range(4)))

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=2).status_code == 200
            except requests.RequestException:  # not listening yet, or its workers still starting
                return False

        wait_for(up, "gunicorn answering", 30, logs)
        seen: dict[str, str] = {}
        wait_for(lambda: seen.update(serving()) or len(seen) == 2, "answers of both gunicorn workers", 15, logs)
        assert set(seen.values()) == {first}  # each worker's registry holds the first version

        answer = requests.post(f"{base}/api/v1/shops/default/programme", headers={**auth, "X-Ladder-Author": "ops"},
                               json={"files": {"ladder.yaml": LONGER}, "reason": "longer window"}, timeout=10)
        assert answer.status_code == 201, answer.text
        wanted = answer.json()["version"]
        assert wanted == rulefile.load_text(LONGER).version != first
        activated_at = time.monotonic()

        latest: dict[str, str] = {}
        wait_for(lambda: latest.update(serving()) or (set(latest) >= set(seen) and set(latest.values()) == {wanted}),
                 "both gunicorn workers deciding with the new version", PICK_UP_SECONDS, logs)
        assert time.monotonic() - activated_at < PICK_UP_SECONDS

        # the queue worker decides the next event with it too
        event = {"id": "e-1", "type": "order_paid", "customer_id": "c-1",
                 "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                 "order": {"id": "o-1", "total": "80.00", "currency": "EUR"}}
        accepted = requests.post(f"{base}/api/v1/shops/default/events", json=event, headers=auth, timeout=10)
        assert accepted.status_code == 202, accepted.text

        def decided() -> bool:
            doc = requests.get(f"{base}/api/v1/shops/default/customers/c-1", headers=auth, timeout=5)
            return doc.status_code == 200 and doc.json()["pending_events"] == 0 and doc.json()["rule_version"] == wanted

        wait_for(decided, "the queue worker deciding with the new version", PICK_UP_SECONDS, logs)
        assert worker.poll() is None, worker_log.read_text()
    finally:
        processes.stop()
