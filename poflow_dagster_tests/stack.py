"""Start a real poflow stack in process groups of its own, for end-to-end tests and benchmarks: the Dagster
webserver (direct run submits), the dagster-daemon (run queue, sensors) and Celery run workers, on a
production-like instance (deploy/dagster_home/dagster.yaml: dagster-postgres + CeleryRunLauncher) or on
any instance YAML given. Every process leads its own group; :meth:`Stack.stop` ends those groups only."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("POFLOW_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_pg_database(prefix: str = "poflow_stack") -> tuple[str, str]:
    """A fresh PostgreSQL database on the test server: (its name, its psycopg2 URL)."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_pg_database(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def deploy_instance_yaml() -> str:
    """The production instance file (deploy/dagster_home/dagster.yaml), as shipped."""
    return (REPO / "deploy" / "dagster_home" / "dagster.yaml").read_text()


@dataclass
class Stack:
    workdir: Path
    env: dict[str, str]
    web_url: str | None = None
    api_url: str | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        handle = self.log(name).open("ab")
        process = subprocess.Popen(args, cwd=REPO, env=self.env, start_new_session=True, stdout=handle,
                                   stderr=subprocess.STDOUT)
        handle.close()
        self.processes[name] = process
        return process

    def start_webserver(self) -> str:
        port = free_port()
        self.start("webserver", [sys.executable, "-m", "dagster_webserver", "-w", str(REPO / "workspace.yaml"),
                                 "-h", "127.0.0.1", "-p", str(port)])
        self.web_url = f"http://127.0.0.1:{port}"
        self.env["POFLOW_DAGSTER_URL"] = self.web_url
        return self.web_url

    def start_api(self) -> str:
        """``poflow serve`` on a free port; returns its URL (ready when ``/healthz`` answers)."""
        port = free_port()
        self.start("api", [sys.executable, "-m", "poflow_dagster.cli", "serve", "--port", str(port),
                           "--log-level", "warning"])
        self.api_url = f"http://127.0.0.1:{port}"
        return self.api_url

    def start_daemon(self) -> None:
        self.start("daemon", [sys.executable, "-m", "dagster._daemon", "run", "-w", str(REPO / "workspace.yaml")])

    def start_worker(self, name: str, workloads: list[str], concurrency: int) -> None:
        args = [sys.executable, "-m", "poflow_dagster.cli", "worker", "--concurrency", str(concurrency),
                "--name", f"{name}@%h"]
        for workload in workloads:
            args += ["--queue", workload]
        self.start(name, args)

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        """Until the webserver answers and every worker logged that it is ready (or a process died)."""
        deadline = time.monotonic() + timeout_s
        pending = set(self.processes)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name).read_text()[-3000:]}")
                if name in ("webserver", "api"):
                    probe = f"{self.web_url}/server_info" if name == "webserver" else f"{self.api_url}/healthz"
                    try:
                        with urllib.request.urlopen(probe, timeout=2):
                            pending.discard(name)
                    except OSError:
                        pass
                elif name == "daemon" or " ready." in self.log(name).read_text(errors="replace"):
                    pending.discard(name)
            time.sleep(0.3)
        if pending:
            raise RuntimeError(f"not ready after {timeout_s} s: {sorted(pending)}")

    def cpu_seconds(self) -> float:
        """CPU time of every live process in the stack's groups, with their reaped children."""
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[str, float]:
        """:meth:`cpu_seconds` per started process (its whole group: code servers, pool children, run processes)."""
        names = {process.pid: name for name, process in self.processes.items()}
        totals = dict.fromkeys(self.processes, 0)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            name = names.get(int(fields[2]))  # pgrp
            if name is not None:
                totals[name] += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        return {name: ticks / CLK_TCK for name, ticks in totals.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # children (code servers, pool processes) share the group: none may linger
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def new_stack(workdir: Path, *, instance_yaml: str, env: dict[str, str]) -> Stack:
    """A stack whose DAGSTER_HOME (under ``workdir``) holds ``instance_yaml``; ``env`` on top of this
    process's environment (minus any Shopify/OpenAI/Redis settings of the developer's shell)."""
    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(instance_yaml)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SHOPIFY_", "OPENAI_", "POFLOW_", "DAGSTER_")) and k != "REDIS_URL"}
    base.update(DAGSTER_HOME=str(dagster_home), PYTHONUNBUFFERED="1", POFLOW_DAGSTER_URL="off")
    base.update(env)
    return Stack(workdir=workdir, env=base)
