"""The same end-to-end PO run with the Dagster instance itself on PostgreSQL (dagster-postgres)."""

from __future__ import annotations

import secrets

import dagster as dg
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def test_po_run_on_a_postgres_dagster_instance(home, db, shop, samples):
    name = f"poflow_dagster_{secrets.token_hex(5)}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        overrides = {"storage": {"postgres": {"postgres_url": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"}}}
        with dg.instance_for_test(overrides=overrides) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            upload = upload_file(db, home, "acme", samples["iberia-pedido-4004.csv"])
            result = run_upload(defs, instance, db, upload.id)
            assert result.success and all(result.checks.values()) and result.images is not None
            assert instance.get_dynamic_partitions("po_uploads") == [upload.id]
            records = instance.fetch_materializations(dg.AssetKey("purchase_order"), limit=10).records
            assert [r.partition_key for r in records] == [upload.id]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
