"""Many ``productSet`` upserts as one Shopify bulk mutation (staged JSONL upload, run, poll, results).

The steps, as Shopify documents them: ``stagedUploadsCreate`` (resource ``BULK_MUTATION_VARIABLES``) hands
out an upload URL and form parameters; the JSONL of mutation variables (one line per product) is POSTed
there as a multipart form (without the shop's access token: the URL is a signed storage URL);
``bulkOperationRunMutation`` runs ``productSet`` once per line in the background, costing the cost bucket
only the mutation call itself; the operation is polled by id until it ends; its result file has one JSON
line per input line, in no particular order, each carrying ``__lineNumber`` (from 0).

Shopify runs a limited number of bulk mutations per shop at once (five since API 2026-01, one before) and
refuses another with ``OPERATION_IN_PROGRESS``; the run is then tried again, with the same staged file, for a
bounded time (:class:`ShopifyBulkBusyError` after it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from poflow_dagster.shopify.client import (
    ProductSpec,
    ShopifyClient,
    ShopifyError,
    ShopifyGraphQLError,
    ShopifyUnreachableError,
    ShopifyUserError,
    SyncedProduct,
    product_set_input,
    synced_product,
)

__all__ = ["BulkLineErrors", "ShopifyBulkBusyError", "ShopifyBulkError", "bulk_product_set"]

BULK_PRODUCT_SET_MUTATION = (
    "mutation PoflowBulkProductSet($identifier: ProductSetIdentifiers!, $input: ProductSetInput!) { "
    "productSet(synchronous: true, identifier: $identifier, input: $input) { "
    "product { id handle variants(first: 5) { nodes { id sku } } } userErrors { field message code } } }"
)

STAGED_UPLOADS_MUTATION = """
mutation PoflowStagedUpload($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url parameters { name value } }
    userErrors { field message }
  }
}
"""

RUN_MUTATION = """
mutation PoflowBulkRun($mutation: String!, $path: String!) {
  bulkOperationRunMutation(mutation: $mutation, stagedUploadPath: $path) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}
"""

POLL_QUERY = """
query PoflowBulkPoll($id: ID!) {
  node(id: $id) { ... on BulkOperation { id status errorCode objectCount url } }
}
"""

_FINISHED_BADLY = frozenset({"FAILED", "CANCELED", "EXPIRED"})
_UPLOAD_ATTEMPTS = 3


class ShopifyBulkError(ShopifyError):
    """``shopify_bulk_failed``: the bulk operation itself failed, was cancelled, expired or timed out."""


class ShopifyBulkBusyError(ShopifyBulkError):
    """``shopify_bulk_busy``: the shop kept refusing a new bulk mutation (``OPERATION_IN_PROGRESS``)."""


class BulkLineErrors(ShopifyUserError):
    """Some lines of a bulk ``productSet`` were refused; the others were applied.

    ``results`` follows the input order (``None`` where the line failed); ``line_errors`` maps the index of
    each failed spec to its ``userErrors`` or GraphQL errors.
    """

    def __init__(self, results: list[SyncedProduct | None], line_errors: dict[int, list[dict[str, Any]]]) -> None:
        first = min(line_errors)
        summary = "; ".join(str(e.get("message", e)) for e in line_errors[first])
        super().__init__(
            "shopify_user_error",
            f"{len(line_errors)} of {len(results)} bulk productSet lines failed (first: line {first}: {summary})",
            errors=[dict(e, lineNumber=i) for i, errors in sorted(line_errors.items()) for e in errors],
        )
        self.results = results
        self.line_errors = line_errors


@dataclass(frozen=True)
class _Line:
    """One result line: the payload's product, or the errors (user errors or GraphQL errors)."""

    product: dict[str, Any] | None
    errors: list[dict[str, Any]]


def bulk_product_set(
    client: ShopifyClient,
    specs: list[ProductSpec],
    *,
    poll_interval_s: float = 1.0,
    timeout_s: float = 3600.0,
    busy_wait_s: float = 60.0,
    known_product_gids: dict[str, str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[SyncedProduct]:
    """Upsert every spec by handle in one bulk operation; the outcomes in input order.

    ``known_product_gids`` (handle -> product GID the caller already recorded) decides ``created`` as in
    :meth:`ShopifyClient.product_set`. ``on_progress(lines done, lines)`` is called at each poll while the
    operation runs (Shopify's ``objectCount``). Raises :class:`BulkLineErrors` (with the lines that did
    succeed) when some lines were refused; :class:`ShopifyBulkBusyError` when the shop still refuses a new bulk
    mutation after ``busy_wait_s`` (polling every ``poll_interval_s``); :class:`ShopifyBulkError` when the
    operation fails or does not finish within ``timeout_s``.
    """
    if not specs:
        return []
    path = _upload(client, _jsonl(specs))
    operation_id = _run(client, path, poll_interval_s, busy_wait_s)
    url = _wait(client, operation_id, poll_interval_s, timeout_s, _ProgressOf(len(specs), on_progress))
    lines = _results(client, url)
    known = known_product_gids or {}
    results: list[SyncedProduct | None] = []
    failed: dict[int, list[dict[str, Any]]] = {}
    for index, spec in enumerate(specs):
        line = lines.get(index, _Line(None, [{"message": "the bulk operation returned no result for this line"}]))
        if line.errors:
            failed[index] = line.errors
            results.append(None)
        else:
            results.append(synced_product(spec, line.product, known.get(spec.handle)))
    if failed:
        raise BulkLineErrors(results, failed)
    return [r for r in results if r is not None]


def _jsonl(specs: list[ProductSpec]) -> bytes:
    lines = (
        json.dumps({"identifier": {"handle": spec.handle}, "input": product_set_input(spec)}, separators=(",", ":"))
        for spec in specs
    )
    return ("\n".join(lines) + "\n").encode("utf-8")


def _upload(client: ShopifyClient, body: bytes) -> str:
    """Stage the JSONL and POST it to the upload target; returns the ``stagedUploadPath`` (the ``key``)."""
    data = client.execute(STAGED_UPLOADS_MUTATION, {"input": [{
        "resource": "BULK_MUTATION_VARIABLES", "filename": "poflow-product-set.jsonl",
        "mimeType": "text/jsonl", "httpMethod": "POST",
    }]})
    target = ((data.get("stagedUploadsCreate") or {}).get("stagedTargets") or [None])[0]
    if not target or not target.get("url"):
        raise ShopifyGraphQLError("shopify_graphql_error", "stagedUploadsCreate returned no upload target")
    parameters = {p["name"]: p["value"] for p in target.get("parameters") or []}
    if "key" not in parameters:
        raise ShopifyGraphQLError("shopify_graphql_error", "stagedUploadsCreate returned no key parameter")
    files = {"file": ("poflow-product-set.jsonl", body, "text/jsonl")}
    problem = ""
    for attempt in range(1, _UPLOAD_ATTEMPTS + 1):
        try:  # a plain client: the signed upload URL must not see the shop's access token
            response = httpx.post(str(target["url"]), data=parameters, files=files, timeout=client.timeout)
        except httpx.TransportError as exc:
            problem = f"cannot reach the staged upload URL ({type(exc).__name__})"
        else:
            if response.status_code in (200, 201, 204):
                return str(parameters["key"])
            problem = f"staged upload answered HTTP {response.status_code}"
            if response.status_code < 500:
                break
        time.sleep(client.backoff_base * attempt)
    raise ShopifyUnreachableError("shopify_unreachable", f"{problem} (gave up)")


def _run(client: ShopifyClient, path: str, retry_every_s: float, busy_wait_s: float) -> str:
    """Start the bulk mutation on the staged file, trying again while the shop has no free slot."""
    deadline = time.monotonic() + busy_wait_s
    while True:
        try:
            data = client.execute(RUN_MUTATION, {"mutation": BULK_PRODUCT_SET_MUTATION, "path": path})
        except ShopifyUserError as refused:
            if not any(e.get("code") == "OPERATION_IN_PROGRESS" for e in refused.user_errors):
                raise
            if time.monotonic() + retry_every_s > deadline:
                raise ShopifyBulkBusyError(
                    "shopify_bulk_busy", f"the shop refused a new bulk mutation for {busy_wait_s:g}s "
                    f"(other bulk operations in progress): {refused.message}",
                ) from refused
            time.sleep(retry_every_s)
            continue
        operation = (data.get("bulkOperationRunMutation") or {}).get("bulkOperation")
        if not operation:
            raise ShopifyBulkError("shopify_bulk_failed", "bulkOperationRunMutation returned no operation")
        return str(operation["id"])


class _ProgressOf:
    """``on_progress`` fed with a poll's ``objectCount`` (a string on the wire), never past ``total``."""

    def __init__(self, total: int, on_progress: Callable[[int, int], None] | None) -> None:
        self.total, self.on_progress = total, on_progress

    def __call__(self, node: dict[str, Any]) -> None:
        if self.on_progress is not None:
            self.on_progress(min(int(node.get("objectCount") or 0), self.total), self.total)


def _wait(
    client: ShopifyClient, operation_id: str, poll_interval_s: float, timeout_s: float, progress: _ProgressOf
) -> str | None:
    """Poll the operation until it completes; its result URL (``None`` when it had no objects)."""
    deadline = time.monotonic() + timeout_s
    while True:
        node = client.execute(POLL_QUERY, {"id": operation_id}).get("node") or {}
        status = node.get("status")
        if node:
            progress(node)
        if status == "COMPLETED":
            return node.get("url")
        if status in _FINISHED_BADLY or not node:
            raise ShopifyBulkError(
                "shopify_bulk_failed", f"bulk operation {operation_id} ended {status or 'missing'} "
                f"({node.get('errorCode') or 'no error code'})",
            )
        if time.monotonic() + poll_interval_s > deadline:
            raise ShopifyBulkError("shopify_bulk_failed", f"bulk operation {operation_id} still {status} after {timeout_s:g}s")
        time.sleep(poll_interval_s)


def _results(client: ShopifyClient, url: str | None) -> dict[int, _Line]:
    """The result file's lines by ``__lineNumber``."""
    if url is None:
        return {}
    response = httpx.get(url, timeout=client.timeout)
    if response.status_code != 200:
        raise ShopifyBulkError("shopify_bulk_failed", f"bulk results answered HTTP {response.status_code}")
    lines: dict[int, _Line] = {}
    for raw in response.text.splitlines():
        if not raw.strip():
            continue
        record = json.loads(raw)
        payload = ((record.get("data") or {}).get("productSet")) or {}
        errors = list(record.get("errors") or []) + list(payload.get("userErrors") or [])
        lines[int(record["__lineNumber"])] = _Line(payload.get("product"), errors)
    return lines
