"""Start and stop a real ``dagster-daemon`` (and anything else) in its own process group (benchmarks only).

The daemon's code server and its run workers inherit the daemon's process group, so stopping the group
by the daemon's pid leaves nothing behind; nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]


def start_daemon(env: dict[str, str], *, log: IO[bytes] | None = None) -> subprocess.Popen:
    """``dagster-daemon run -w workspace.yaml`` in this repo, as the leader of a new process group."""
    sink = log if log is not None else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "dagster._daemon", "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT if log else sink,
    )


def stop_group(process: subprocess.Popen, *, grace: float = 5.0) -> None:
    """SIGTERM the process group led by ``process``, then SIGKILL whatever is left of it (by its pgid only)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # children (code server, run workers) share the group: none may linger
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def group_members(pgid: int) -> list[int]:
    """Live pids whose process group is ``pgid`` (read from /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members
