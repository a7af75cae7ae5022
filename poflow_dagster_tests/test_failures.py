from poflow_dagster.domain.failures import failure_reason, stage_of_step


def test_stage_of_step():
    assert stage_of_step("purchase_order.shopify_sync") == "shopify_sync"
    assert stage_of_step("purchase_order_po_saved_correctly") == "purchase_order_po_saved_correctly"
    assert stage_of_step(None) is None


def test_failure_reason_keeps_stable_codes():
    r = failure_reason("purchase_order.ai_parsing", "dagster._core.definitions.events.Failure: unsupported_format: a PDF")
    assert (r.stage, r.code, r.message) == ("ai_parsing", "unsupported_format", "a PDF")
    r = failure_reason("purchase_order.shopify_sync", "shopify_unreachable: connection refused\n  at line 2")
    assert (r.code, r.message) == ("shopify_unreachable", "connection refused at line 2")
    r = failure_reason("purchase_order.database_save", "KeyError: 'x'")
    assert (r.code, r.message) == ("stage_failed", "KeyError: 'x'")


def test_run_failure_reason_outside_any_step():
    from poflow_dagster.domain.failures import run_failure_reason

    r = run_failure_reason("Run execution process for abc was terminated by signal 9 (SIGKILL).")
    assert (r.stage, r.code) == (None, "run_failed") and r.message.startswith("Run execution process")
    assert run_failure_reason(None, canceled=True).code == "run_canceled"
    assert run_failure_reason("resource_limit: parsing used more than 1 GB").code == "resource_limit"
