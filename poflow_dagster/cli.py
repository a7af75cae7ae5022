"""``poflow``: upload POs, inspect their workflow, report on the run history, run the demo, serve the Shopify
emulator."""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from poflow_dagster import config
from poflow_dagster.domain.errors import PoflowError


class PoflowGroup(click.Group):
    """Every known failure is one line on stderr, ``error: <code>: <message>``, exit 2; never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PoflowError as error:
            click.echo(f"error: {error.code}: {error.message}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:  # Ctrl-C in any command: quiet, the shell's convention (no "Aborted!")
            sys.exit(130)
        except Exception as error:  # pragma: no cover - last resort, still one line
            if os.environ.get("POFLOW_DEBUG"):
                raise
            message = " ".join(f"{type(error).__name__}: {error}".split())
            click.echo(f"error: internal_error: {message} (set POFLOW_DEBUG=1 for details)", err=True)
            sys.exit(1)


@click.group(cls=PoflowGroup)
def main() -> None:
    """poflow: purchase orders in, Shopify products out (on Dagster)."""


def _db():
    from poflow_dagster.store.db import get_database

    return get_database(config.database_url())


@main.command()
@click.option("--queue", "workloads", multiple=True, type=click.Choice(["sheet", "scan"]),
              help="Workload queue(s) to serve (repeatable; default both): sheet = spreadsheets, EDI, UBL, text "
                   "PDFs; scan = scanned PDFs and images (LLM).")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="Runs at once (default: POFLOW_WORKER_CONCURRENCY_<QUEUE>, sheet 4, scan 2, summed).")
@click.option("--name", default=None, help="Worker name (default poflow-<queues>@<host>).")
def worker(workloads: tuple[str, ...], concurrency: int | None, name: str | None) -> None:
    """Run a long-lived run worker (Celery, prefork): it executes whole PO runs that the Dagster instance's
    CeleryRunLauncher sends to its queues, with poflow's code imported once. DAGSTER_HOME must be that
    instance (deploy/dagster_home); the broker is POFLOW_CELERY_BROKER_URL (default REDIS_URL)."""
    from poflow_dagster.workers.queues import concurrency_for, queue_for

    workloads = workloads or ("sheet", "scan")
    if not os.environ.get("DAGSTER_HOME"):
        raise PoflowError("no_dagster_home", "set DAGSTER_HOME to the instance whose run_launcher is "
                                             "CeleryRunLauncher (see deploy/README.md)")
    queues = ",".join(queue_for(w) for w in workloads)
    runs = concurrency or sum(concurrency_for(w) for w in workloads)
    node = name or f"poflow-{'-'.join(workloads)}@%h"
    command = [sys.executable, "-m", "celery", "-A", "poflow_dagster.workers.celery_app", "worker", "-Q", queues,
               "-c", str(runs), "--prefetch-multiplier=1", "-n", node, "-l", "info"]
    os.execv(sys.executable, command)


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--merchant", "merchant_id", required=True, help="Merchant id (created with defaults if new).")
@click.option("--no-submit", is_flag=True, help="Only store it: upload_sensor (or `poflow run ID`) starts the run.")
def upload(file: Path, merchant_id: str, no_submit: bool) -> None:
    """Register FILE as an upload of MERCHANT, print its id and start its run at once through the Dagster
    webserver (POFLOW_DAGSTER_URL); with no webserver there, upload_sensor starts it. With POFLOW_API_URL and
    POFLOW_API_TOKEN set, the file goes to that `poflow serve` instead (no database needed here)."""
    from poflow_dagster.api_client import api_upload_settings, upload_through_api

    through_api = api_upload_settings()
    if through_api is not None:
        if no_submit:
            raise PoflowError("option_conflict", "--no-submit needs the local database; unset POFLOW_API_URL")
        answer = upload_through_api(*through_api, file, merchant_id)
        _report_upload(answer["upload_id"], answer.get("duplicate_of"), answer.get("run") or {})
        return
    from poflow_dagster.intake import upload_file

    database = _db()
    record = upload_file(database, config.poflow_home(), merchant_id, file)
    if record.duplicate_of or no_submit:
        _report_upload(record.id, record.duplicate_of, {})
        return
    from poflow_dagster.run_submit import submit_upload_run

    submitted = submit_upload_run(database, record.id)
    _report_upload(record.id, None, {"outcome": submitted.outcome, "run_id": submitted.run_id,
                                     "detail": submitted.detail})


@main.command("inbox-watch")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.25, show_default=True,
              help="Seconds between two looks at the inbox.")
def inbox_watch(interval: float) -> None:
    """Register files dropped into POFLOW_HOME/inbox/<merchant>/ and submit their runs at once (a long-lived
    process; upload_sensor alone reads the inbox only every few seconds). One line per new upload: its id and
    what happened to its run. Ctrl-C / SIGTERM finish the current pass and exit 130 / 143."""
    import signal
    import threading

    from poflow_dagster.inbox_watch import watch_inbox

    stop, exit_code = threading.Event(), [0]

    def halt(signum, _frame) -> None:
        exit_code[0] = 128 + signum
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, halt)
    database, home = _db(), config.poflow_home()
    (home / "inbox").mkdir(parents=True, exist_ok=True)
    click.echo(f"watching {home / 'inbox'} (one folder per merchant)", err=True)

    def report(submitted) -> None:
        click.echo(" ".join(filter(None, (submitted.upload_id, submitted.outcome, submitted.run_id))))

    worker = threading.Thread(target=watch_inbox, args=(database, home, stop), name="poflow-inbox-watch",
                              kwargs={"interval_s": interval, "on_submitted": report}, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    sys.exit(exit_code[0])


def _report_upload(upload_id: str, duplicate_of: str | None, run: dict) -> None:
    """The upload id on stdout (scripts read it); what happened to its run as a note on stderr."""
    if duplicate_of:
        click.echo(f"note: same bytes as upload {duplicate_of}; recorded as a duplicate, no new PO", err=True)
    click.echo(upload_id)
    outcome, detail = run.get("outcome"), run.get("detail")
    if outcome == "submitted":
        click.echo(f"note: run {run.get('run_id')} submitted", err=True)
    elif outcome == "left_to_sensor":
        click.echo(f"note: {detail or 'no Dagster webserver answered'}; upload_sensor will start the run", err=True)
    elif outcome == "unconfirmed":
        click.echo(f"note: {detail or 'the webserver did not confirm in time'}; the run is being started "
                   "(check with `poflow status`)", err=True)
    elif outcome == "already_requested":
        click.echo("note: its run was already requested (upload_sensor got to it first)", err=True)


@main.command()
@click.argument("upload_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def status(upload_id: str, fmt: str) -> None:
    """Print an upload's workflow row, its per-stage durations and its drafts' product images."""
    from poflow_dagster.images.status import upload_image_status
    from poflow_dagster.status_view import render_status, status_json
    from poflow_dagster.store.workflow import status_report

    report = status_report(_db(), upload_id)
    images = upload_image_status(_db(), upload_id)
    click.echo(json.dumps(status_json(report, images), indent=2) if fmt == "json" else render_status(report, images))


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["json", "table", "csv"]), default="json")
def extract(file: Path, fmt: str) -> None:
    """Parse FILE and print the PO: JSON (the contract; money as decimal strings), a table, or the
    lines as CSV for spreadsheets (formula cells neutralised)."""
    from poflow_dagster.csv_export import po_lines_csv
    from poflow_dagster.extraction import extract_file_bounded
    from poflow_dagster.extraction.llm import LLMSettings
    from poflow_dagster.pipeline.metadata import po_lines_markdown

    if not file.is_file():
        raise PoflowError("file_not_found", f"{file} is not a readable file")
    parsed = extract_file_bounded(file, filename=file.name, llm=LLMSettings.from_env())
    if fmt == "json":
        click.echo(json.dumps(parsed.to_contract(), indent=2, ensure_ascii=False))
    elif fmt == "csv":
        click.echo(po_lines_csv(parsed), nl=False)
    else:
        click.echo(po_lines_markdown(parsed))


@main.command()
@click.argument("upload_id")
def run(upload_id: str) -> None:
    """Process one upload now, in this process (no daemon needed), and print its outcome."""
    _run_now(upload_id)


def _run_now(upload_id: str) -> None:
    from poflow_dagster.definitions import defs
    from poflow_dagster.pipeline.local import local_instance, run_upload

    # The persistent instance of config.dagster_home(): the run shows in `dagster dev` started on that home,
    # and the analytics refresh reads it (no separate history recording needed).
    with local_instance() as instance:
        result = run_upload(defs, instance, _db(), upload_id, log_level="WARNING")
        _refresh_quietly(instance)
    if not result.success:
        raise PoflowError("run_failed", f"{result.failed_step}: {result.error}")
    from poflow_dagster.store.workflow import status_report

    state = status_report(_db(), upload_id).workflow
    click.echo(
        f"{upload_id}: {state.status if state else 'not started'} in {result.seconds:.2f}s, "
        f"checks {result.checks_passed}/{len(result.checks)}"
    )


def _refresh_quietly(instance) -> None:
    """Bring ``stage_runs`` up to date from ``instance`` so ``poflow report`` includes the run just made; a
    failure only warns (the analytics schedule catches up later)."""
    from poflow_dagster.pipeline.run_history import refresh_stage_runs

    try:
        refresh_stage_runs(instance, _db())
    except Exception as error:  # the run itself is done; the history is a convenience here
        click.echo(f"note: run history not refreshed ({type(error).__name__}: {error}); "
                   "`poflow report --refresh` retries", err=True)


@main.command()
@click.argument("upload_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit code 4).")
@click.option("--format", "fmt", type=click.Choice(["bar", "json"]), default="bar",
              help="bar: a live progress bar; json: one ProgressEvent JSON object per line.")
def watch(upload_id: str, timeout: float | None, fmt: str) -> None:
    """Follow an upload until it finishes: stage, message, percent and ETA, from the progress bus (Redis, or the
    database without it) and the workflow row. Exit code: 0 completed (or a duplicate upload), 1 failed,
    3 needs_review, 4 timed out, 2 unknown upload; 130 stopped with Ctrl-C, 143 with SIGTERM, 141 its reader
    went away (e.g. ``--format json | head``), all quietly, from start-up (connecting to the database and the
    bus) to the end."""
    import signal

    previous_term = _exit_on_sigterm()
    try:
        from poflow_dagster.watch_view import TIMEOUT_EXIT, RichWatch, describe, json_line, load_row, watch_upload

        # An unknown id is one line and exit 2, before any display starts. Connecting may hang inside the
        # database driver, where Python sees no signal: it runs aside, so Ctrl-C and SIGTERM still end the watch.
        def connect():
            database = _db()
            load_row(database, upload_id)
            return database

        database = _interruptible(connect)
        if fmt == "json":
            code, last = watch_upload(database, upload_id, lambda state: click.echo(json_line(state)),
                                      redis_url=config.redis_url(), timeout=timeout)
        else:
            with RichWatch(upload_id) as bar:
                code, last = watch_upload(database, upload_id, bar, redis_url=config.redis_url(), timeout=timeout)
            click.echo(f"{upload_id}: {last.get('percent', 0)}% {describe(last)}")
    except KeyboardInterrupt:  # Ctrl-C stops watching, not the upload: no "Aborted!", not the failed code 1
        sys.exit(130)
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as a process killed by SIGPIPE would
        _quiet_stdout()
        sys.exit(141)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    if code == TIMEOUT_EXIT:
        click.echo(f"error: watch_timeout: {upload_id} still {last.get('status')} after {timeout:g} s", err=True)
    sys.exit(code)


def _interruptible(work):
    """``work()`` in a daemon thread, waited for in slices: the main thread stays where signals are handled (a
    blocked ``connect`` inside a C driver would otherwise hold Ctrl-C until the driver gives up). Returns its
    result or raises its exception."""
    import threading

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the waiting thread as is
            outcome["error"] = error

    worker = threading.Thread(target=run, name="poflow-watch-start", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _exit_on_sigterm():
    """Make SIGTERM end ``poflow watch`` like Ctrl-C does: ``SystemExit(143)`` unwinds (the display is stopped,
    the bus connection closed) instead of the process vanishing mid-line. Returns the previous handler, or
    ``None`` when handlers cannot be set here (not the main thread)."""
    import signal

    def terminated(signum, frame):  # noqa: ARG001 - the signal handler's signature
        raise SystemExit(128 + signal.SIGTERM)

    try:
        return signal.signal(signal.SIGTERM, terminated)
    except ValueError:
        return None


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. under a test runner)
        pass


@main.command()
@click.option("--merchant", "merchant_id", help="Only this merchant's uploads.")
@click.option("--status", "status_", help="Only this status: received, pending, processing, completed, failed, "
              "needs_review, duplicate.")
@click.option("--since", help="Created within a span before now (24h, 7d, 90m, 2w) or since an ISO date/time (UTC).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def uploads(merchant_id: str | None, status_: str | None, since: str | None, limit: int, fmt: str) -> None:
    """List uploads newest first: id, merchant, file, status, stage, percent, ETA, created, error."""
    import datetime as dt

    from poflow_dagster.report_view import parse_since
    from poflow_dagster.status_view import list_uploads, print_uploads

    start = parse_since(since, now=dt.datetime.now(dt.UTC)) if since else None
    rows = list_uploads(_db(), merchant_id=merchant_id, status=status_, since=start, limit=limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        print_uploads(rows)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def samples(directory: Path) -> None:
    """Write the bundled sample POs (CSV, TSV, XLSX, PDF, X12, UBL XML) into DIRECTORY and list them; e.g.
    ``poflow samples ./samples && poflow upload samples/acme-po-1001.csv --merchant acme``."""
    from poflow_dagster.samples import generate_samples

    if directory.exists() and not directory.is_dir():
        raise PoflowError("not_a_directory", f"{directory} exists and is not a directory")
    for path in generate_samples(directory):
        click.echo(str(path))


@main.command()
@click.argument("upload_id")
@click.option("--by", "approved_by", default=lambda: os.environ.get("USER") or "unknown", help="Who approves.")
@click.option("--now", is_flag=True, help="Continue the PO in this process instead of waiting for the sensor.")
@click.option("--match", "choices", multiple=True, metavar="LINE=VARIANT_GID",
              help="This PO line is that existing Shopify variant (an AMBIGUOUS_MATCH pick; repeatable). The "
                   "supplier's SKU is learned for its next POs. Lines left ambiguous become new products.")
def approve(upload_id: str, approved_by: str, now: bool, choices: tuple[str, ...]) -> None:
    """Let a PO waiting for review (needs_review) continue to Shopify sync in a new run."""
    from poflow_dagster.store.review import approve_upload

    database = _db()
    picks = [_parse_match_choice(choice) for choice in choices]
    if picks:
        from poflow_dagster.catalog.store import approve_match
        from poflow_dagster.store.review import awaiting_review

        if not awaiting_review(database, upload_id):  # nothing is recorded for a PO that is not waiting
            approve_upload(database, upload_id, approved_by)  # raises the clear not_awaiting_review error
        for line_no, variant_gid in picks:
            try:
                approve_match(database, upload_id, line_no, variant_gid, approved_by)
            except LookupError as error:
                raise PoflowError("unknown_match", str(error)) from None
    approve_upload(database, upload_id, approved_by)
    if now:
        _run_now(upload_id)
    else:
        click.echo(f"{upload_id}: approved; upload_sensor starts its continuation run")


def _parse_match_choice(choice: str) -> tuple[int, str]:
    line, _, variant_gid = choice.partition("=")
    if not line.strip().isdigit() or not variant_gid.strip().startswith("gid://shopify/ProductVariant/"):
        raise PoflowError("invalid_match", f"--match takes LINE=gid://shopify/ProductVariant/N, not {choice!r}")
    return int(line), variant_gid.strip()


@main.group()
def shopify() -> None:
    """Shopify: what a PO's sync would change."""


@shopify.command("diff")
@click.argument("upload_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def shopify_diff_command(upload_id: str, fmt: str) -> None:
    """Print what syncing UPLOAD would change in its merchant's shop — products created or updated (field by
    field), existing variants' cost, lines awaiting a pick, units to receive — without writing to Shopify."""
    from poflow_dagster.resources import ShopifyResource
    from poflow_dagster.shopify_diff import shopify_diff
    from poflow_dagster.store.uploads import merchant_for_upload

    database = _db()
    merchant_row = merchant_for_upload(database, upload_id)
    if not merchant_row.shopify_sync_enabled:
        raise PoflowError("sync_off", f"Shopify sync is off for merchant {merchant_row.id}: nothing would change")
    shops = ShopifyResource.from_env()
    target = shops.target_for(merchant_row)
    with shops.client_for(target) as client:
        diff = shopify_diff(database, client, merchant_row, target.url, upload_id)
    if fmt == "json":
        click.echo(json.dumps(diff.to_json(), indent=2, ensure_ascii=False))
        return
    click.echo(f"{upload_id} -> {diff.shop_url}")
    for title, products in (("products", diff.products), ("existing variants", diff.matched)):
        for product in products:
            click.echo(f"  {product.action:<9} {title[:-1] if title == 'products' else 'variant'} {product.sku} "
                       f"({product.target})")
            for change in product.changes:
                click.echo(f"            {change.field}: {change.old or '-'} -> {change.new or '-'}")
    for reason in diff.awaiting_pick:
        click.echo(f"  waiting   {reason}")
    for line_no, variant, quantity in diff.receipts:
        click.echo(f"  receive   line {line_no}: {format(quantity, 'f')} units ({variant})")
    for line in diff.received_manually:
        click.echo(f"  manual    line {line.line_no}: received manually, not at sync ({line.received} of "
                   f"{_text(line.ordered)} received so far)")
    counts = (sum(p.action == "create" for p in diff.products), sum(p.action == "update" for p in diff.products),
              sum(p.action == "update" for p in diff.matched))
    click.echo(f"{counts[0]} to create, {counts[1]} to update, {counts[2]} variant costs to change, "
               f"{len(diff.awaiting_pick)} lines awaiting a pick; nothing was written")


@main.group()
def merchant() -> None:
    """Merchant settings."""


@merchant.command("set")
@click.argument("merchant_id")
@click.option("--name")
@click.option("--markup", "markup", help="Markup percent on unit cost, e.g. 40 or 37.5.")
@click.option("--sync/--no-sync", "sync", default=None, help="Turn Shopify sync on or off.")
@click.option("--shop-url", help="The merchant's shop, https://<name>.myshopify.com (another host only if "
              "POFLOW_SHOPIFY_ALLOWED_HOSTS lists it).")
@click.option("--token-env", help="NAME of the environment variable holding the shop's access token: "
              "POFLOW_SHOPIFY_TOKEN_<NAME> (or SHOPIFY_ACCESS_TOKEN).")
@click.option("--receive-stock/--no-receive-stock", "receive_stock", default=None,
              help="Apply received PO quantities to Shopify stock (see --receive-on). Needs --location.")
@click.option("--location", help="The Shopify location receiving stock, gid://shopify/Location/<n> (checked "
              "against the shop's locations when a shop is configured).")
@click.option("--receive-on", "receive_on", metavar="manual|sync",
              help="When stock is received: manual (`poflow receive` as goods arrive; the default) or sync "
              "(every ordered unit when the PO syncs, for POs uploaded on delivery).")
@click.option("--update-price/--no-update-price", "update_price", default=None,
              help="Matched existing variants also get the PO's price (unit cost with the markup), not only cost.")
@click.option("--image-feed", "image_feed", metavar="URL_OR_PATH",
              help="The supplier's image feed (SKU -> image URLs, CSV or JSON) at an http(s) URL or a local path; "
              "'' turns it off.")
def merchant_set(merchant_id, name, markup, sync, shop_url, token_env, receive_stock, location, receive_on,
                 update_price, image_feed) -> None:
    """Create or update a merchant."""
    from poflow_dagster.store.merchants import configure_merchant
    from poflow_dagster.store.schema import Merchant

    try:
        markup_value = Decimal(markup) if markup is not None else None
    except InvalidOperation:
        raise PoflowError("invalid_markup", f"{markup!r} is not a number") from None
    database = _db()
    with database.session() as session:
        m = configure_merchant(
            session, merchant_id, name=name, markup_percent=markup_value, shopify_sync_enabled=sync,
            shop_url=shop_url, shopify_token_env=token_env, receive_stock=receive_stock, stock_location_gid=location,
            receive_on=receive_on, update_price=update_price, image_feed_url=image_feed,
        )
        if location:
            _check_location(m)
    with database.session() as session:  # print what was stored, read back
        m = session.get(Merchant, merchant_id)
        stock = f"on at {m.stock_location_gid}, receive on {m.receive_on}" if m.receive_stock else "off"
        click.echo(
            f"{m.id}: markup {m.markup_percent}%, shopify sync {'on' if m.shopify_sync_enabled else 'off'}, "
            f"shop {m.shop_url or 'default'}, token env {m.shopify_token_env or '-'}, receive stock {stock}, "
            f"update price {'on' if m.update_price else 'off'}, image feed {m.image_feed_url or '-'}"
        )


def _check_location(merchant) -> None:
    """``unknown_location`` unless the merchant's configured shop has its stock location (not checked against the
    bundled emulator, which starts empty in every process)."""
    from poflow_dagster.resources import ShopifyResource

    shops = ShopifyResource.from_env()
    target = shops.target_for(merchant)
    if target.is_emulator:
        return
    with shops.client_for(target) as client:
        known = {found.gid: found.name for found in client.locations()}
    if merchant.stock_location_gid not in known:
        listed = ", ".join(f"{gid} ({name})" for gid, name in known.items()) or "none"
        raise PoflowError("unknown_location", f"{target.url} has no location {merchant.stock_location_gid}; "
                                              f"its locations: {listed}")


@merchant.command("token")
@click.argument("merchant_id")
@click.option("--label", help="What the token is for (shown by `poflow merchant tokens`; revoke by it).")
def merchant_token(merchant_id: str, label: str | None) -> None:
    """Issue an API token for MERCHANT_ID (for `poflow serve`) and print it once: only its hash is kept."""
    from poflow_dagster.store.tokens import issue_token

    issued = issue_token(_db(), merchant_id, label=label)
    click.echo(issued.token)
    click.echo(f"token {issued.id} for merchant {merchant_id}{f' ({label})' if label else ''}: shown only now; "
               "send it as 'Authorization: Bearer <token>'", err=True)


@merchant.command("tokens")
@click.argument("merchant_id")
def merchant_tokens(merchant_id: str) -> None:
    """List MERCHANT_ID's API tokens (id, label, issued, revoked; never the token)."""
    from poflow_dagster.store.tokens import list_tokens

    for info in list_tokens(_db(), merchant_id):
        state = f"revoked {info.revoked_at}" if info.revoked_at else "live"
        click.echo(f"{info.id:>5}  {info.label or '-':<24} issued {info.created_at}  {state}")


@merchant.command("revoke-token")
@click.argument("merchant_id")
@click.argument("token", required=False)
@click.option("--id", "token_id", type=int, help="The token's id (from `poflow merchant tokens`).")
@click.option("--label", help="Revoke the live tokens with this label.")
@click.option("--all", "all_tokens", is_flag=True, help="Revoke all of the merchant's tokens.")
def merchant_revoke_token(merchant_id: str, token: str | None, token_id: int | None, label: str | None,
                          all_tokens: bool) -> None:
    """Revoke MERCHANT_ID's API token: the TOKEN itself, or --id, --label or --all. Requests with it get 401 at
    once; open event streams end within 30 s."""
    from poflow_dagster.store.tokens import revoke_tokens

    count = revoke_tokens(_db(), merchant_id, token=token, token_id=token_id, label=label, all_tokens=all_tokens)
    click.echo(f"revoked {count} token{'s' if count != 1 else ''} of merchant {merchant_id}")


@main.command()
@click.argument("upload_id")
@click.option("--line", "line_nos", multiple=True, type=int, help="A PO line number (repeatable, each with --qty).")
@click.option("--qty", "quantities", multiple=True, help="Units of that --line received now (repeatable).")
@click.option("--all", "receive_all", is_flag=True, help="Receive the rest of every line (ordered - received).")
@click.option("--allow-over", is_flag=True, help="Allow receiving more than was ordered.")
@click.option("--by", "received_by", default=lambda: os.environ.get("USER") or "unknown", help="Who received it.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def receive(upload_id: str, line_nos: tuple[int, ...], quantities: tuple[str, ...], receive_all: bool,
            allow_over: bool, received_by: str, fmt: str) -> None:
    """Receive stock against UPLOAD's PO into the merchant's Shopify location (`poflow merchant set ID
    --receive-stock --location GID`): some units of some lines (--line N --qty Q ...), or the rest (--all).
    Receipts an earlier attempt left unconfirmed are finished first, under the same keys: stock never moves
    twice. Prints each receipt and what each line has received; exit 2 with one line when a receipt is refused."""
    from poflow_dagster import receiving

    lines = _receive_lines(line_nos, quantities, receive_all)
    database = _db()
    with _receiving_client(database, upload_id) as client:
        result = receiving.receive(database, client, upload_id, lines, allow_over=allow_over, applied_by=received_by)
    totals = receiving.received_lines(database, upload_id)
    if fmt == "json":
        click.echo(json.dumps({"upload_id": upload_id, "receipts": [r.to_json() for r in result.receipts],
                               "unsynced": list(result.unsynced),
                               "lines": [{"line_no": t.line_no, "sku": t.sku, "ordered": _text(t.ordered),
                                          "received": str(t.received)} for t in totals]}, indent=2))
    else:
        _print_receipts(upload_id, result, totals)
    if result.failed:
        raise PoflowError("receipt_refused", f"Shopify refused {len(result.failed)} receipt(s) of {upload_id}: "
                                             f"{result.failed[0].error}")


def _receive_lines(line_nos: tuple[int, ...], quantities: tuple[str, ...], receive_all: bool) -> dict | None:
    """``{line_no: units}`` from the --line/--qty pairs, or ``None`` for --all."""
    if receive_all == bool(line_nos or quantities):
        raise PoflowError("option_conflict", "give either --line N --qty Q (repeatable) or --all")
    if receive_all:
        return None
    if len(line_nos) != len(quantities) or len(set(line_nos)) != len(line_nos):
        raise PoflowError("option_conflict", "give each --line once, each with one --qty")
    try:
        return {n: Decimal(q) for n, q in zip(line_nos, quantities)}
    except InvalidOperation:
        raise PoflowError("invalid_quantity", f"--qty {' '.join(quantities)}: not a number") from None


def _receiving_client(database, upload_id: str):
    """A Shopify client for the shop of the upload's merchant (who must receive stock)."""
    from poflow_dagster.receiving import receiving_merchant
    from poflow_dagster.resources import ShopifyResource

    merchant = receiving_merchant(database, upload_id)
    shops = ShopifyResource.from_env()
    return shops.client_for(shops.target_for(merchant))


def _print_receipts(upload_id: str, result, totals) -> None:
    for r in result.receipts:
        note = " (finished from an earlier attempt)" if r.resumed else ""
        click.echo(f"line {r.line_no}: +{r.quantity} {r.status}{note}" + (f": {r.error}" if r.error else ""))
    for line_no in result.unsynced:
        click.echo(f"line {line_no}: not received: no Shopify variant yet")
    if not result.receipts:
        click.echo(f"{upload_id}: nothing to receive")
    for t in totals:
        click.echo(f"line {t.line_no} {t.sku or '-'}: received {t.received} of {_text(t.ordered)}")


def _text(value) -> str:
    return "-" if value is None else str(value)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, type=int, show_default=True)
@click.option("--log-level", default="info", type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the HTTP API, the progress events (SSE) and the web page until interrupted.

    Open http://HOST:PORT/ with a token from `poflow merchant token ID`; the API reference is at /docs."""
    import uvicorn

    from poflow_dagster.api import create_app

    app = create_app()
    click.echo(f"poflow serve on http://{host}:{port}/ (API reference: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=3)


@main.command("db-upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically on first use)."""
    from poflow_dagster.store.db import Database

    database = Database(config.database_url())
    database.migrate()
    click.echo("database is up to date")


@main.command("shopify-emulator")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8787, type=int)
@click.option("--state", type=click.Path(path_type=Path), help="SQLite file to keep products in (default: memory).")
@click.option("--token", help="Only accept this access token (default: any non-empty token).")
def shopify_emulator(host: str, port: int, state: Path | None, token: str | None) -> None:
    """Serve the bundled Shopify Admin GraphQL emulator until interrupted."""
    from poflow_dagster.shopify.emulator import serve_forever

    serve_forever(host, port, state, access_token=token)


@main.command()
@click.option("--since", default="7d", show_default=True,
              help="Start of the window: a span before now (7d, 24h, 90m, 2w) or an ISO date/time (UTC).")
@click.option("--merchant", "merchant_id", help="Only this merchant's runs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--refresh", is_flag=True,
              help="First bring stage_runs up to date from the local Dagster instance (DAGSTER_HOME, default "
              "POFLOW_HOME/dagster).")
def report(since: str, merchant_id: str | None, fmt: str, refresh: bool) -> None:
    """Stage performance, orchestration waits, bottlenecks, merchant health and ETA accuracy from the run
    history (the ``stage_runs`` table the analytics job keeps); ``--format json`` is a stable contract."""
    import datetime as dt

    from poflow_dagster.report_view import parse_since

    now = dt.datetime.now(dt.UTC)
    start = parse_since(since, now=now)  # bad input fails before anything heavy is imported
    database = _db()
    if merchant_id is not None:
        from poflow_dagster.store.schema import Merchant

        with database.session() as session:
            if session.get(Merchant, merchant_id) is None:
                raise PoflowError("unknown_merchant", f"no merchant {merchant_id!r}")
    if refresh:
        _refresh_history(database)
    from poflow_dagster.analytics.report import build_report

    data = build_report(database, now=now, since=start, merchant_id=merchant_id)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    from poflow_dagster.report_view import print_report, report_console

    print_report(data, report_console(), merchant_id=merchant_id)


def _refresh_history(database) -> None:
    """``--refresh``: read the runs that finished since the last refresh from the local Dagster instance
    (``DAGSTER_HOME``, default ``POFLOW_HOME/dagster``)."""
    from poflow_dagster.pipeline.local import local_instance
    from poflow_dagster.pipeline.run_history import refresh_stage_runs

    with local_instance() as instance:
        done = refresh_stage_runs(instance, database)
    click.echo(f"refreshed stage_runs: {done.new_runs} new runs, {done.rows_written} rows in {done.seconds:.1f} s",
               err=True)


@main.command()
@click.option("--merchant", "merchant_id", help="Merchant id to use (default: a new demo-<time> merchant).")
def demo(merchant_id: str | None) -> None:
    """Run the bundled sample POs end to end on the embedded defaults and print a summary."""
    from poflow_dagster.demo import run_demo

    sys.exit(run_demo(merchant_id))



@main.group()
def catalog() -> None:
    """The merchants' Shopify catalogs as poflow keeps them (for matching PO lines)."""


@catalog.command("sync")
@click.argument("merchant_id", required=False)
@click.option("--all", "all_merchants", is_flag=True, help="Every merchant with Shopify sync on.")
@click.option("--full", is_flag=True, help="Read every variant and remove those of products deleted in Shopify.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def catalog_sync(merchant_id: str | None, all_merchants: bool, full: bool, fmt: str) -> None:
    """Bring MERCHANT's (or --all merchants') synced Shopify catalog up to date: variants and products changed since
    the last pass (resumes an interrupted pass), or everything with --full. The scheduled catalog_sync_job does the
    same hourly (incremental) and nightly (full)."""
    from poflow_dagster.catalog.shop_catalog import merchants_to_sync, sync_merchants
    from poflow_dagster.resources import ShopifyResource

    if bool(merchant_id) == all_merchants:
        raise PoflowError("bad_arguments", "give one MERCHANT or --all")
    database = _db()
    done = sync_merchants(database, ShopifyResource.from_env(), merchants_to_sync(database, merchant_id), full=full)
    if fmt == "json":
        click.echo(json.dumps([item.to_json() for item in done], indent=2, ensure_ascii=False))
    for item in done:
        if fmt != "json" and item.result is not None:
            r = item.result
            click.echo(f"{item.merchant_id} {item.shop_url}: {r.pages} pages, {r.variants} variants, {r.products} "
                       f"products, {r.deleted} deleted, {'complete' if r.complete else 'incomplete'}, cursor "
                       f"{r.cursor.isoformat() if r.cursor else '-'}" + (" (full)" if r.full else ""))
        if item.error is not None:
            click.echo(f"error: {item.error.code}: {item.merchant_id}: {item.error.message}", err=True)
    if any(item.error is not None for item in done):
        sys.exit(2)

if __name__ == "__main__":  # pragma: no cover
    main()
