"""Partition hygiene at scale: upload_sensor tick time and the UI's GraphQL partition query, before/after retention.

    .venv/bin/python benchmarks/partitions.py [--partitions 20000] [--retire 19000] [--pg]

Builds a Dagster instance (SQLite, temporary) with N ``po_uploads`` partitions and the matching app-database
uploads (bulk inserts; ``--pg`` puts the app database on PostgreSQL 127.0.0.1:5432/test, in a schema of its own),
then measures, before and after ``retire_partitions`` removes ``--retire`` of them:

* **sensor tick**: ``upload_sensor`` evaluated with ``dg.build_sensor_context`` (5 new uploads per tick) plus what
  the daemon does with its answer (``has_dynamic_partition`` / ``add_dynamic_partitions`` per requested key);
* **GraphQL**: the asset partitions page's query for ``purchase_order`` (``assetNodeOrError`` →
  ``partitionKeysByDimension``, ``assetPartitionStatuses``, ``partitionStats``) through dagster_graphql against a
  code server of ``poflow_dagster/definitions.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERY = """
query PartitionsPage($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions }
      }
    }
  }
}
"""


def _insert_uploads(database, count: int, old: int, now: dt.datetime, prefix: str = "up-bench") -> list[str]:
    """``count`` completed uploads with workflow rows (``old`` of them ended 200 days ago), in bulk."""
    import sqlalchemy as sa

    from poflow_dagster.store.merchants import ensure_merchant
    from poflow_dagster.store.schema import Upload, WorkflowExecution

    ids = [f"{prefix}-{i:06d}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    with database.session() as session:
        ensure_merchant(session, "bench")
    uploads, workflows = [], []
    for i, upload_id in enumerate(ids):
        changed = now - dt.timedelta(days=200 if i < old else 1, seconds=count - i)
        uploads.append({"id": upload_id, "merchant_id": "bench", "original_filename": f"{upload_id}.csv",
                        "sha256": uuid.uuid4().hex * 2, "size_bytes": 100, "mime_type": "text/csv",
                        "stored_path": f"/bench/{upload_id}.csv", "source": "cli", "status": "completed",
                        "created_at": changed, "updated_at": changed})
        workflows.append({"upload_id": upload_id, "status": "completed", "progress_percent": 100,
                          "completed_at": changed, "updated_at": changed, "event_seq": 0})
    with database.session() as session:
        for start in range(0, count, 5000):
            session.execute(sa.insert(Upload), uploads[start:start + 5000])
            session.execute(sa.insert(WorkflowExecution), workflows[start:start + 5000])
    return ids


def _new_received(database, n: int) -> None:
    import sqlalchemy as sa

    from poflow_dagster.store.schema import Upload

    with database.session() as session:
        session.execute(sa.insert(Upload), [
            {"id": f"up-new-{uuid.uuid4().hex[:12]}", "merchant_id": "bench", "original_filename": "new.csv",
             "sha256": uuid.uuid4().hex * 2, "size_bytes": 100, "mime_type": "text/csv",
             "stored_path": "/bench/new.csv", "source": "cli", "status": "received"} for _ in range(n)])


def measure_sensor(instance, database, home: Path, ticks: int) -> float:
    """Median seconds of one upload_sensor tick (evaluation + the daemon's partition handling)."""
    import dagster as dg

    from poflow_dagster.pipeline.sensors import upload_sensor
    from poflow_dagster.resources import DatabaseResource, StorageResource

    resources = {"db": DatabaseResource(url=database.url), "storage": StorageResource(home=str(home))}
    times = []
    for _ in range(ticks):
        _new_received(database, 5)
        started = time.perf_counter()
        result = upload_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        for request in result.dynamic_partitions_requests:  # as the daemon's _handle_dynamic_partitions_requests
            new = [k for k in request.partition_keys if not instance.has_dynamic_partition(request.partitions_def_name, k)]
            instance.add_dynamic_partitions(request.partitions_def_name, new)
        for run_request in result.run_requests:  # the daemon validates each requested partition key
            assert instance.has_dynamic_partition("po_uploads", run_request.partition_key)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_graphql(process_context, repeats: int) -> tuple[float, int]:
    """Median seconds of the partitions page query (a fresh request each time, as the webserver makes one per
    HTTP request), and the number of partition keys it returned."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    times, keys = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = execute_dagster_graphql(process_context.create_request_context(), QUERY, variables={"assetKey": {"path": ["purchase_order"]}})
        times.append(time.perf_counter() - started)
        assert not result.errors, result.errors
        node = result.data["assetNodeOrError"]
        keys = len(node["partitionKeysByDimension"][0]["partitionKeys"])
    return statistics.median(times), keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=20_000)
    parser.add_argument("--retire", type=int, default=19_000)
    parser.add_argument("--ticks", type=int, default=15)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--pg", action="store_true", help="app database on PostgreSQL 127.0.0.1:5432/test")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="poflow-partitions-"))
    home = tmp / "home"
    schema = None
    if args.pg:
        import sqlalchemy as sa

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp / 'app.sqlite3'}"
    os.environ.update({"POFLOW_HOME": str(home), "POFLOW_DATABASE_URL": url})
    os.environ.pop("REDIS_URL", None)

    import dagster as dg
    from dagster_graphql.test.utils import define_out_of_process_workspace

    from poflow_dagster.pipeline.partitions import po_uploads
    from poflow_dagster.pipeline.retention import retire_partitions
    from poflow_dagster.store.db import get_database

    now = dt.datetime.now(dt.UTC)
    database = get_database(url)
    (tmp / "dagster").mkdir(parents=True)
    with dg.instance_for_test(temp_dir=str(tmp / "dagster")) as instance:
        started = time.perf_counter()
        ids = _insert_uploads(database, args.partitions, args.retire, now)
        for start in range(0, len(ids), 5000):
            instance.add_dynamic_partitions(po_uploads.name, ids[start:start + 5000])
        setup_s = time.perf_counter() - started
        print(f"setup: {args.partitions:,} uploads + partitions in {setup_s:.1f} s (app DB: {'PostgreSQL' if args.pg else 'SQLite'}, "
              f"Dagster: SQLite)")

        with define_out_of_process_workspace(str(ROOT / "poflow_dagster" / "definitions.py"), "defs", instance) as ctx:
            measure_graphql(ctx, 1)  # warm the code server
            measure_sensor(instance, database, home, 2)
            before_sensor = measure_sensor(instance, database, home, args.ticks)
            before_gql, before_keys = measure_graphql(ctx, args.queries)

            started = time.perf_counter()
            result = retire_partitions(instance, database, days=90, now=now)
            retire_s = time.perf_counter() - started

            after_sensor = measure_sensor(instance, database, home, args.ticks)
            after_gql, after_keys = measure_graphql(ctx, args.queries)

    print(f"retention: removed {result.removed:,} of {result.partitions_before:,} partitions in {retire_s:.1f} s "
          f"({result.batches} batches; {result.removed / max(retire_s, 1e-9):,.0f} partitions/s)")
    print(f"{'measure':<34}{'before':>12}{'after':>12}{'ratio':>9}")
    print(f"{'partition keys (GraphQL)':<34}{before_keys:>12,}{after_keys:>12,}")
    print(f"{'upload_sensor tick (median, ms)':<34}{before_sensor * 1000:>12.1f}{after_sensor * 1000:>12.1f}"
          f"{before_sensor / after_sensor:>8.1f}x")
    print(f"{'GraphQL partitions page (median, ms)':<34}{before_gql * 1000:>12.1f}{after_gql * 1000:>12.1f}"
          f"{before_gql / after_gql:>8.1f}x")
    database.dispose()
    if schema:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
