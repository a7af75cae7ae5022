"""The one Definitions loads, and holds what the UI must show."""

from __future__ import annotations

import dagster as dg

from poflow_dagster.definitions import defs


def test_definitions_load_with_everything_wired():
    repo = defs.get_repository_def()
    assert {"po_job", "image_job"} <= {job.name for job in repo.get_all_jobs()}
    assert {s.name for s in defs.sensors} == {"upload_sensor", "po_failure_sensor", "image_attachment_sensor", "workflow_reconciler"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)
    graph = repo.asset_graph
    assert {dg.AssetKey("purchase_order"), dg.AssetKey("product_images")} <= set(graph.get_all_asset_keys())
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {"po_saved_correctly", "shopify_matches_drafts"}


def test_po_graph_has_the_stage_ops_in_order_and_in_process_executor():
    job = defs.resolve_job_def("po_job")
    assert job.executor_def.name == "in_process"
    ops = {node.name for node in job.graph.node_dict["purchase_order"].definition.nodes}
    assert ops == {"ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"}
    assert all(
        node.definition.description for node in job.graph.node_dict["purchase_order"].definition.nodes
    ), "every op has a docstring for the UI"
    images = defs.resolve_job_def("image_job")
    assert [n.name for n in images.graph.node_dict["product_images"].definition.nodes] == ["image_attachment"]
