"""The Celery app of poflow's run workers (``celery -A poflow_dagster.workers.celery_app worker -Q po-sheet``).

Dagster's ``CeleryRunLauncher`` (dagster-celery, configured in ``deploy/dagster_home/dagster.yaml``) turns a
launched run into one Celery task (``execute_job``) on the queue named by the run's ``dagster-celery/queue`` tag;
a worker here executes the whole run in its prefork child with the in-process executor. The worker imports
Dagster and ``poflow_dagster.definitions`` once, in its main process before it forks the pool (``worker_init``),
and each pool child opens its Dagster instance once (``worker_process_init``), so a run pays no process start, no
import and no instance set-up: that is the point of these workers (a run process per PO cost 3–5 s here).

Configuration (environment, same as the instance's launcher):
``POFLOW_CELERY_BROKER_URL`` (default ``REDIS_URL``, else ``redis://127.0.0.1:6379/0``),
``POFLOW_CELERY_BACKEND_URL`` (default: the broker URL). ``DAGSTER_HOME`` must point at the instance the
runs belong to (the one whose ``run_launcher`` is ``CeleryRunLauncher``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from multiprocessing import process as stdlib_process

from celery.signals import worker_init, worker_process_init
from dagster_celery.config import TASK_EXECUTE_JOB_NAME, TASK_RESUME_JOB_NAME
from dagster_celery.make_app import make_app

log = logging.getLogger(__name__)


def broker_url() -> str:
    return os.environ.get("POFLOW_CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def backend_url() -> str:
    return os.environ.get("POFLOW_CELERY_BACKEND_URL") or broker_url()


app = make_app(
    app_args={
        "broker": broker_url(),
        "backend": backend_url(),
        "include": [],
        "config_source": {
            # One run at a time per child, and a run is acknowledged only once it ran: a worker that dies
            # mid-run hands it back (Dagster's run monitoring then decides: the run is failed, not doubled).
            "worker_prefetch_multiplier": 1,
            "task_acks_late": False,
            "broker_connection_retry_on_startup": True,
            "result_expires": 24 * 3600,
            "worker_hijack_root_logger": False,
        },
        "task_default_queue": os.environ.get("POFLOW_CELERY_DEFAULT_QUEUE", "po-sheet"),
    }
)
_instance = None


def worker_instance():
    """This pool child's Dagster instance (``DAGSTER_HOME``), created once and kept for every run it executes:
    dagster-celery's own task opens a new instance — storage engines, connections — per run (~0.3 s here)."""
    global _instance
    if _instance is None:
        from dagster import DagsterInstance

        _instance = DagsterInstance.get()
    return _instance


def _send_to_null(_event) -> None:
    pass


@app.task(bind=True, name=TASK_EXECUTE_JOB_NAME, track_started=True)
def execute_job(_task, execute_job_args_packed) -> int:
    """Execute one whole run (what ``CeleryRunLauncher.launch_run`` sends), in this process."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import unpack_value

    args = unpack_value(execute_job_args_packed, as_type=ExecuteRunArgs)
    return _execute_run_command_body(
        instance=worker_instance(), run_id=args.run_id, write_stream_fn=_send_to_null,
        set_exit_code_on_failure=args.set_exit_code_on_failure is not False,
    )


@app.task(bind=True, name=TASK_RESUME_JOB_NAME, track_started=True)
def resume_job(_task, execute_job_args_packed) -> int:  # the launcher sends it under this name
    """Resume a run whose worker went away (``CeleryRunLauncher.resume_run``), in this process."""
    from dagster._cli.api import _resume_run_command_body
    from dagster._grpc.types import ResumeRunArgs
    from dagster._serdes import unpack_value

    args = unpack_value(execute_job_args_packed, as_type=ResumeRunArgs)
    return _resume_run_command_body(
        instance=worker_instance(), run_id=args.run_id, write_stream_fn=_send_to_null,
        set_exit_code_on_failure=args.set_exit_code_on_failure is not False,
    )


@worker_init.connect
def _import_code_once(**_kwargs) -> None:
    """Import Dagster and our definitions once, in the worker's main process before it forks its pool:
    every prefork child inherits them (copy-on-write), so neither a run nor a child start pays the import. The
    ``openai`` SDK too (~0.5 s): the extraction code imports it only where requests are made (the parsing sandbox
    never loads it), so a worker's first scan would pay for it otherwise."""
    started = time.monotonic()
    import openai  # noqa: F401 - preloaded for the pool children

    from poflow_dagster.definitions import defs

    defs.get_repository_def()
    log.info("run worker ready: poflow definitions loaded in %.2f s", time.monotonic() - started)


class _StdlibProcess(stdlib_process.BaseProcess):
    """What the standard library's ``multiprocessing`` believes the current process is in a pool child: a
    main process of its own (not daemonic, with an authkey its pickler accepts), named like the pool child."""

    def __init__(self, name: str) -> None:  # noqa: D107 - mirrors multiprocessing.process._MainProcess
        self._identity = ()
        self._name = name
        self._parent_pid = None
        self._parent_name = None
        self._popen = None
        self._closed = False
        self._config = {"authkey": stdlib_process.AuthenticationString(os.urandom(32)), "semprefix": "/mp"}

    def close(self) -> None:
        pass


@worker_process_init.connect
def _allow_child_processes(**_kwargs) -> None:
    """A run parses each document in a sandboxed child process (extraction/sandbox.py), which it always reaps
    itself. In a pool child, billiard has put its own process object into ``multiprocessing`` (daemonic, so
    it may not start children, and with an authkey the standard pickler refuses): put a standard one back."""
    stdlib_process._current_process = _StdlibProcess(multiprocessing.current_process().name)  # noqa: SLF001
    try:  # open this child's instance before its first run arrives
        worker_instance()
    except Exception as error:  # e.g. DAGSTER_HOME unset: the first run reports it
        log.warning("Dagster instance not opened at start: %s", error)
