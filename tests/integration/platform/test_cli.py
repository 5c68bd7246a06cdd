"""``opencoach serve`` on embedded defaults: it comes up, serves, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_serve_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not come up in 120 s"
            time.sleep(0.5)
        signup = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/signup",
            json={"coach_name": "CLI", "email": "cli@example.com", "password": "long enough"},
            timeout=30,
        )
        assert signup.status_code == 201
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("worker" in " ".join(c.cmdline()) for c in children), "a worker runs alongside"
        assert _processes_using(tmp_path), "embedded PostgreSQL runs in the data dir"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        time.sleep(1)
        assert [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
        assert _processes_using(tmp_path) == [], "PostgreSQL and Redis are stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
