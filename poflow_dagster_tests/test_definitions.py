"""The one Definitions loads, and holds what the UI must show."""

from __future__ import annotations

import dagster as dg
from dagster._core.execution.api import create_execution_plan

from poflow_dagster.definitions import defs


def test_definitions_load_with_everything_wired():
    repo = defs.get_repository_def()
    jobs = {job.name for job in repo.get_all_jobs()}
    assert {"po_job", "analytics_job"} <= jobs and "image_job" not in jobs  # images are a step of po_job
    assert {s.name for s in defs.sensors} == {"upload_sensor", "po_failure_sensor", "workflow_reconciler"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)
    graph = repo.asset_graph
    assert {dg.AssetKey("purchase_order"), dg.AssetKey("product_images")} <= set(graph.get_all_asset_keys())
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {"po_saved_correctly", "shopify_matches_drafts", "eta_backtest", "stage_slowdown"}


ANALYTICS = ["stage_runs", "stage_performance", "bottleneck_report", "merchant_health", "eta_model"]


def test_analytics_assets_checks_job_and_schedule():
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    for name in ANALYTICS:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "analytics" and not node.is_partitioned, name
        assert "pandas" in node.kinds and node.description, name
    for name in ANALYTICS[1:]:
        assert dg.AssetKey("stage_runs") in graph.get(dg.AssetKey(name)).parent_keys, name
    checks = {key.name: key.asset_key.path[-1] for key in graph.asset_check_keys}
    assert checks["eta_backtest"] == "eta_model" and checks["stage_slowdown"] == "bottleneck_report"
    job = defs.resolve_job_def("analytics_job")
    assert job.executor_def.name == "in_process"
    assert {key.path[-1] for key in job.asset_layer.executable_asset_keys} == set(ANALYTICS)
    assert {key.name for key in job.asset_layer.asset_graph.asset_check_keys} == {"eta_backtest", "stage_slowdown"}
    schedule = next(s for s in defs.schedules if s.name == "analytics_schedule")
    assert schedule.name == "analytics_schedule" and schedule.job_name == "analytics_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.cron_schedule == "*/5 * * * *"


def test_po_graph_has_the_stage_ops_in_order_and_in_process_executor():
    job = defs.resolve_job_def("po_job")
    assert job.executor_def.name == "in_process"
    ops = {node.name for node in job.graph.node_dict["purchase_order"].definition.nodes}
    assert ops == {"ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"}
    assert all(
        node.definition.description for node in job.graph.node_dict["purchase_order"].definition.nodes
    ), "every op has a docstring for the UI"
    assert [n.name for n in job.graph.node_dict["product_images"].definition.nodes] == ["image_attachment"]


def test_po_job_selects_the_po_and_its_images_with_the_checks():
    job = defs.resolve_job_def("po_job")
    keys = {key.path[-1] for key in job.asset_layer.executable_asset_keys}
    assert keys == {"purchase_order", "product_images"}
    assert {key.name for key in job.asset_layer.asset_graph.asset_check_keys} >= {
        "po_saved_correctly", "shopify_matches_drafts"}
    # The image step waits for the PO (after status_update) and for the blocking check, and yields to any other
    # ready step (shopify_matches_drafts): it is the run's last step.
    plan = create_execution_plan(job)
    images = plan.get_step_by_key("product_images.image_attachment")
    assert {"purchase_order.status_update", "purchase_order_po_saved_correctly"} <= set(
        images.get_execution_dependency_keys())
    assert int(images.tags["dagster/priority"]) < 0
    assert [s.key for s in plan.get_steps_to_execute_by_level()[-1]] == ["product_images.image_attachment"]


def test_analytics_schedule_skips_while_a_refresh_is_unfinished():
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from poflow_dagster.pipeline.analytics_schedules import analytics_schedule

    with dg.instance_for_test() as instance:
        tick = analytics_schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
        assert len(tick.run_requests) == 1 and not tick.skip_message
        instance.add_run(DagsterRun(job_name="analytics_job", run_id="a" * 32, status=DagsterRunStatus.STARTED))
        tick = analytics_schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
        assert not tick.run_requests and "not finished yet" in tick.skip_message
        instance.delete_run("a" * 32)
        # Other jobs' runs (a PO in flight) never hold the refresh back.
        instance.add_run(DagsterRun(job_name="po_job", run_id="b" * 32, status=DagsterRunStatus.STARTED))
        tick = analytics_schedule.evaluate_tick(dg.build_schedule_context(instance=instance))
        assert len(tick.run_requests) == 1


def test_a_hung_or_never_launched_refresh_does_not_stop_the_analytics_for_good():
    """A refresh has a max runtime (run monitoring fails it), a run created long ago no longer holds the
    schedule back, and a run that was never submitted (NOT_STARTED) never did."""
    import datetime as dt

    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from poflow_dagster.pipeline.analytics_schedules import ANALYTICS_MAX_RUNTIME_SECONDS, analytics_schedule

    job = defs.resolve_job_def("analytics_job")
    assert job.run_tags["dagster/max_runtime"] == str(ANALYTICS_MAX_RUNTIME_SECONDS) == "900"
    assert job.run_tags["poflow/kind"] == "analytics"
    with dg.instance_for_test() as instance:
        instance.add_run(DagsterRun(job_name="analytics_job", run_id="c" * 32, status=DagsterRunStatus.NOT_STARTED))
        assert len(analytics_schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests) == 1
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2 * ANALYTICS_MAX_RUNTIME_SECONDS + 60)
        instance.run_storage.add_historical_run(  # a refresh that hung long ago: it no longer counts
            DagsterRun(job_name="analytics_job", run_id="d" * 32, status=DagsterRunStatus.STARTED),
            run_creation_time=long_ago,
        )
        assert len(analytics_schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests) == 1
        instance.add_run(DagsterRun(job_name="analytics_job", run_id="e" * 32, status=DagsterRunStatus.STARTED))
        assert not analytics_schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests


def test_the_run_queue_lets_one_analytics_refresh_run_at_a_time():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    for path in (root / "dagster.yaml", root / "deploy" / "dagster_home" / "dagster.yaml"):
        limits = yaml.safe_load(path.read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
        assert {"key": "poflow/kind", "value": "analytics", "limit": 1} in limits, path


_RESOURCE_PROBE = """
import json
import dagster as dg
from poflow_dagster.definitions import RESOURCE_ENV, defs

repo = defs.get_repository_def()
assert {"po_job", "analytics_job"} <= {job.name for job in repo.get_all_jobs()}
wrapped = {}
for key, fields in RESOURCE_ENV.items():
    resource = defs.resources[key]
    for field in fields:
        value = getattr(resource, field)
        name = getattr(value, "env_var_name", None)
        wrapped[f"{key}.{field}"] = name
with dg.build_resources(dict(defs.resources)) as built:  # resolves every dg.EnvVar, as a run does
    resolved = {
        "shopify.access_token": built.shopify.access_token,
        "shopify.max_attempts": built.shopify.max_attempts,
        "shopify.throttle_timeout": built.shopify.throttle_timeout,
        "db.url": built.db.url,
        "llm.model": built.llm.model,
    }
print(json.dumps({"wrapped": wrapped, "resolved": resolved}))
"""

_ALL_ENV = {
    "POFLOW_DATABASE_URL": "sqlite:///{tmp}/app.sqlite3", "POFLOW_HOME": "{tmp}/home",
    "SHOPIFY_SHOP_URL": "https://example.myshopify.com", "SHOPIFY_ACCESS_TOKEN": "shpat_secret",
    "SHOPIFY_API_VERSION": "2026-10", "POFLOW_SHOPIFY_MAX_ATTEMPTS": "3", "POFLOW_SHOPIFY_THROTTLE_TIMEOUT": "60",
    "REDIS_URL": "redis://redis.invalid:6379/9", "OPENAI_API_KEY": "sk-secret", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    "POFLOW_LLM_MODEL": "some-model",
}


def _probe(tmp_path, extra: dict[str, str]) -> dict:
    import json
    import os
    import subprocess
    import sys

    from poflow_dagster.definitions import RESOURCE_ENV

    names = {name for fields in RESOURCE_ENV.values() for name in fields.values()}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update({k: v.format(tmp=tmp_path) for k, v in extra.items()})
    done = subprocess.run([sys.executable, "-c", _RESOURCE_PROBE], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_definitions_load_and_resolve_with_nothing_configured(tmp_path):
    data = _probe(tmp_path, {})
    assert set(data["wrapped"].values()) == {None}  # no dg.EnvVar on an unset variable: nothing fails to resolve
    assert data["resolved"] == {"shopify.access_token": "", "shopify.max_attempts": 10,
                                "shopify.throttle_timeout": 900, "db.url": "", "llm.model": ""}


def test_every_resource_field_reads_its_env_var_when_set(tmp_path):
    from poflow_dagster.definitions import RESOURCE_ENV

    data = _probe(tmp_path, _ALL_ENV)
    expected = {f"{key}.{field}": name for key, fields in RESOURCE_ENV.items() for field, name in fields.items()}
    assert data["wrapped"] == expected  # the UI shows the variable's name, never a secret's value
    assert set(expected.values()) == set(_ALL_ENV)  # and the test sets every one of them
    assert data["resolved"] == {"shopify.access_token": "shpat_secret", "shopify.max_attempts": 3,
                                "shopify.throttle_timeout": 60, "db.url": f"sqlite:///{tmp_path}/app.sqlite3",
                                "llm.model": "some-model"}


def test_the_tests_start_with_no_resource_variable_set():
    """conftest clears every variable a resource field reads (else a shell's REDIS_URL breaks the suite)."""
    from poflow_dagster.definitions import RESOURCE_ENV
    from poflow_dagster_tests.conftest import CONFIG_ENV

    names = {name for fields in RESOURCE_ENV.values() for name in fields.values()}
    assert names <= set(CONFIG_ENV)
