"""Start an upload's PO run at once: one GraphQL request to the Dagster webserver, no Dagster import here.

``poflow upload``, ``POST /api/uploads`` and ``poflow serve`` call :func:`submit_upload_run` right after the
upload is stored. It marks the upload's run as requested in the app DB (so ``upload_sensor`` never asks for a
second one), then sends one GraphQL document to the webserver (``POFLOW_DAGSTER_URL``, default
``http://127.0.0.1:3000``) with two mutations executed in order: ``addDynamicPartition`` (the upload's
``po_uploads`` partition) and ``launchRun`` of ``po_job`` for it. The run carries the sensor's run key
(``dagster/run_key`` = upload id, ``dagster/sensor_name`` = ``upload_sensor``), so even a sensor tick that
raced this submit would skip it: the sensor stays the safety net, never a second run.

If the webserver cannot be reached or refuses the run, the request is withdrawn (``clear_run_request``) and
``upload_sensor`` starts the run at its next tick, as before; the caller gets a :class:`Submitted` saying so
instead of an error (the upload itself succeeded). This module imports only the standard library, SQLAlchemy
(via the store) and our store functions: an upload command stays well under a second.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from poflow_dagster.store.db import Database

log = logging.getLogger(__name__)

#: The sensor whose run key a direct submit borrows (the sensor then never requests the same upload again).
SENSOR_NAME = "upload_sensor"
PO_JOB = "po_job"
PARTITIONS_DEF = "po_uploads"

_SUBMIT = """
mutation Submit($partition: String!, $repository: RepositorySelector!, $params: ExecutionParams!) {
  addDynamicPartition(partitionsDefName: "%s", partitionKey: $partition, repositorySelector: $repository) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on Error { message }
    ... on PythonError { message }
    ... on RunConflict { message }
    ... on InvalidSubsetError { message }
  }
}
""" % PARTITIONS_DEF


@dataclass(frozen=True)
class Submitted:
    """What happened to the run of an upload: ``submitted`` (run id known), ``already_requested`` (a run was
    requested before: nothing sent), ``left_to_sensor`` (no webserver reached, or it refused: the sensor starts
    it), ``unconfirmed`` (the request went out but no answer in time, a dropped connection or a server error: the
    run may exist; if none appears, workflow_reconciler withdraws the request after its grace period and the
    sensor starts one)."""

    upload_id: str
    outcome: str
    run_id: str | None = None
    detail: str | None = None
    seconds: float = 0.0


def dagster_url() -> str | None:
    """The Dagster webserver to submit runs to (``POFLOW_DAGSTER_URL``; ``off`` disables direct submits)."""
    value = os.environ.get("POFLOW_DAGSTER_URL", "http://127.0.0.1:3000").strip()
    return None if value.lower() in ("", "off", "none", "0") else value.rstrip("/")


def code_location() -> str:
    """The code location name of ``poflow_dagster.definitions`` in the webserver's workspace
    (``POFLOW_DAGSTER_LOCATION``; workspace.yaml and pyproject name it ``poflow``)."""
    return os.environ.get("POFLOW_DAGSTER_LOCATION", "poflow")


def submit_upload_run(db: Database, upload_id: str, *, url: str | None = None, timeout_s: float = 10.0) -> Submitted:
    """Request ``upload_id``'s PO run now (see the module docstring). Never raises for an unreachable webserver."""
    from poflow_dagster.store.uploads import clear_run_request, mark_run_requested

    started = time.monotonic()
    url = url if url is not None else dagster_url()
    if url is None:
        return Submitted(upload_id, "left_to_sensor", detail="direct submit is off (POFLOW_DAGSTER_URL=off)")
    if not mark_run_requested(db, upload_id):
        return Submitted(upload_id, "already_requested", seconds=time.monotonic() - started)
    tags = _run_tags(db, upload_id)
    try:
        run_id = _launch(url, upload_id, tags, timeout_s)
    except SubmitTimeout as error:
        # The webserver may still create the run: withdrawing the request now could let the sensor start a
        # second one. The request stays; workflow_reconciler forgets it only if no run shows up within its grace.
        log.warning("%s: %s; the run request stands (workflow_reconciler checks it)", upload_id, error)
        return Submitted(upload_id, "unconfirmed", detail=str(error), seconds=time.monotonic() - started)
    except SubmitError as error:
        clear_run_request(db, upload_id)  # the sensor asks at its next tick
        log.info("%s: direct submit to %s failed (%s); upload_sensor will start the run", upload_id, url, error)
        return Submitted(upload_id, "left_to_sensor", detail=str(error), seconds=time.monotonic() - started)
    return Submitted(upload_id, "submitted", run_id=run_id, seconds=time.monotonic() - started)


class SubmitError(Exception):
    """The webserver could not be reached or did not launch the run (message says which)."""


class SubmitTimeout(SubmitError):
    """The request went out but no answer came in time: the run may or may not exist."""


def _run_tags(db: Database, upload_id: str) -> dict[str, str]:
    from poflow_dagster.pipeline.run_tags import upload_run_tags

    tags = dict(upload_run_tags(db, [upload_id]).get(upload_id, {}))  # merchant, file, workload, shop, queue
    tags.update({
        "dagster/partition": upload_id,
        "dagster/run_key": upload_id,
        "dagster/sensor_name": SENSOR_NAME,
        "poflow/submitted": "direct",
    })
    return tags


def _launch(url: str, upload_id: str, tags: dict[str, str], timeout_s: float) -> str:
    repository = {"repositoryLocationName": code_location(), "repositoryName": "__repository__"}
    variables = {
        "partition": upload_id,
        "repository": repository,
        "params": {
            "selector": {**repository, "jobName": PO_JOB},
            "runConfigData": "{}",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        },
    }
    body = json.dumps({"query": _SUBMIT, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    answer = _post(request, timeout_s)
    if answer.get("errors"):
        raise SubmitError("; ".join(e.get("message", "?") for e in answer["errors"])[:300])
    data = answer.get("data") or {}
    partition = data.get("addDynamicPartition") or {}
    if partition.get("__typename") not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
        raise SubmitError(f"partition not added: {partition.get('__typename')}: {partition.get('message')}")
    launched = data.get("launchRun") or {}
    if launched.get("__typename") != "LaunchRunSuccess":
        raise SubmitError(f"run not launched: {launched.get('__typename')}: {launched.get('message')}")
    return launched["run"]["runId"]


def _post(request: urllib.request.Request, timeout_s: float) -> dict:
    """POST the GraphQL document. Only a failure before the request was sent, or an answer that the document was
    invalid (4xx), proves the webserver launched nothing (:class:`SubmitError`); a failure once it was sent — no
    answer in time, the connection dropped, a server error (5xx), an unreadable answer — may hide a launched run
    (:class:`SubmitTimeout`: the request stands, and ``workflow_reconciler`` withdraws it only if no run appears)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except TimeoutError:
        raise SubmitTimeout(f"no answer from the Dagster webserver within {timeout_s:g} s") from None
    except urllib.error.HTTPError as error:  # an answer with an error status
        if error.code >= 500:
            raise SubmitTimeout(f"the Dagster webserver answered HTTP {error.code}; the run may exist") from None
        raise SubmitError(f"the Dagster webserver refused the request: HTTP {error.code}") from None
    except urllib.error.URLError as error:  # raised while connecting or sending: no complete request went out
        if isinstance(error.reason, TimeoutError):
            raise SubmitTimeout(f"no answer from the Dagster webserver within {timeout_s:g} s") from None
        raise SubmitError(f"no answer from the Dagster webserver: {error.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as error:  # sent, then no (readable) answer
        raise SubmitTimeout(f"the Dagster webserver gave no answer ({type(error).__name__}); the run may exist") \
            from None
