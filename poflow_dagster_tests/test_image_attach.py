"""attach_image / attach_images against the emulator over HTTP: idempotent across re-runs and lost answers,
product_gone, failed media, batching, and the processing status read back."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from poflow_dagster.images.attach import ImageToAttach, attach_image, attach_images, media_filename
from poflow_dagster.shopify import emulator_media
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.media import add_product_media, list_product_media
from poflow_dagster.shopify.rate_budget import InProcessBudget

TOKEN = "shpat_attach_test"


def png(color: str, size: tuple[int, int] = (10, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def image(data: bytes, *, alt: str = "Blue Mug", known: str | None = None, tmp: Path | None = None) -> ImageToAttach:
    sha = hashlib.sha256(data).hexdigest()
    if tmp is not None:
        path = tmp / f"{sha}.png"
        path.write_bytes(data)
        return ImageToAttach(sha, "image/png", len(data), path, alt, known)
    return ImageToAttach(sha, "image/png", len(data), lambda: data, alt, known)


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN) as handle:
        yield handle


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[ShopifyClient]:
    with ShopifyClient(emulator.url, TOKEN, timeout=10.0, backoff_base=0.01,
                       budget=InProcessBudget(f"test:{emulator.url}")) as c:
        yield c


@pytest.fixture
def product_gid(client: ShopifyClient) -> str:
    spec = ProductSpec(sku="MUG-1", title="Blue Mug", price=Decimal("9.50"), handle="blue-mug")
    return client.product_set(spec).product_gid


def ops(emulator: EmulatorHandle, name: str) -> int:
    return emulator.stats.operations.get(name, 0)


def test_attach_one_uploads_our_bytes_sets_alt_and_reads_back_ready(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str, tmp_path: Path
) -> None:
    data = png("blue")
    wanted = image(data, tmp=tmp_path)
    result = attach_image(client, product_gid, wanted)
    assert (result.outcome, result.status, result.reason) == ("attached", "READY", None)
    (media,) = list_product_media(client, product_gid) or []
    assert media.gid == result.media_gid and media.alt == "Blue Mug" and media.status == "READY"
    assert media.url is not None and media_filename(wanted) in media.url
    (row,) = emulator_media.media_rows(emulator, product_gid)
    assert row["sha256"] == hashlib.sha256(data).hexdigest() == wanted.sha256


def test_reattaching_the_same_image_sends_nothing_and_adds_no_media(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    first = attach_image(client, product_gid, image(png("blue")))
    again = attach_image(client, product_gid, image(png("blue")))  # no recorded gid: found by file name
    assert (again.outcome, again.media_gid) == ("already", first.media_gid)
    recorded = attach_image(client, product_gid, image(png("blue"), known=first.media_gid))
    assert (recorded.outcome, recorded.media_gid) == ("already", first.media_gid)
    assert len(list_product_media(client, product_gid) or []) == 1
    assert ops(emulator, "stagedUploadsCreate") == 1 and ops(emulator, "productUpdate") == 1


def test_a_recorded_media_gid_that_still_exists_is_already_even_under_another_name(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    first = attach_image(client, product_gid, image(png("blue")))
    other = attach_image(client, product_gid, image(png("green"), known=first.media_gid))
    assert (other.outcome, other.media_gid) == ("already", first.media_gid)
    assert ops(emulator, "productUpdate") == 1


def test_lost_answer_then_retry_attaches_exactly_once(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    emulator.drop_answers(1, only="productUpdate")  # applied on the shop, the client sees a dropped connection
    result = attach_image(client, product_gid, image(png("blue")))
    assert result.outcome == "attached" and result.media_gid is not None
    assert ops(emulator, "productUpdate") == 1  # never resent: the re-listing found it
    assert len(list_product_media(client, product_gid) or []) == 1
    # A crash before the DB recorded the gid: the next run finds it by name.
    assert attach_image(client, product_gid, image(png("blue"))).outcome == "already"


def test_productupdate_unreachable_before_applying_is_retried_after_a_listing(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    emulator.inject_failures(503, 1, only="productUpdate")  # refused, not applied
    result = attach_image(client, product_gid, image(png("blue")))
    assert result.outcome == "attached"
    assert emulator.stats.injected_failures == 1  # the refused try (not executed, so not counted below)
    assert ops(emulator, "productUpdate") == 1 and len(list_product_media(client, product_gid) or []) == 1


def test_deleted_product_is_product_gone_with_a_note_and_nothing_uploaded(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    client.execute("mutation($id: ID!) { productDelete(input: {id: $id}) { deletedProductId } }", {"id": product_gid})
    results = attach_images(client, product_gid, [image(png("blue")), image(png("red"))])
    assert [r.outcome for r in results] == ["product_gone", "product_gone"]
    assert all("no longer exists" in r.note for r in results)
    assert ops(emulator, "stagedUploadsCreate") == 0


def test_product_removed_while_images_run_is_product_gone_not_an_error(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    data = png("blue")

    def read_while_the_merchant_deletes() -> bytes:
        client.execute("mutation($id: ID!) { productDelete(input: {id: $id}) { deletedProductId } }",
                       {"id": product_gid})
        return data

    sha = hashlib.sha256(data).hexdigest()
    result = attach_image(client, product_gid, ImageToAttach(sha, "image/png", len(data),
                                                             read_while_the_merchant_deletes, "Blue Mug"))
    assert result.outcome == "product_gone"
    assert emulator_media.media_rows(emulator) == []


def test_undecodable_image_fails_with_the_media_error_and_is_not_uploaded_again(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    bad = b"\x89PNG\r\n\x1a\n but truncated garbage"
    first = attach_image(client, product_gid, image(bad))
    assert (first.outcome, first.reason) == ("failed", "media_error:IMAGE_PROCESSING_FAILURE")
    assert first.media_gid is not None
    again = attach_image(client, product_gid, image(bad))
    assert (again.outcome, again.reason, again.media_gid) == ("failed", "media_error:IMAGE_PROCESSING_FAILURE",
                                                               first.media_gid)
    assert ops(emulator, "productUpdate") == 1


def test_bytes_that_do_not_match_the_recorded_sha256_fail_before_any_upload(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str, tmp_path: Path
) -> None:
    wanted = image(png("blue"), tmp=tmp_path)
    Path(wanted.source).write_bytes(png("red"))  # type: ignore[arg-type]
    missing = ImageToAttach("f" * 64, "image/png", 10, tmp_path / "gone.png", "Blue Mug")
    results = attach_images(client, product_gid, [wanted, missing])
    assert [(r.outcome, r.reason) for r in results] == [("failed", "unreadable"), ("failed", "unreadable")]
    assert ops(emulator, "stagedUploadsCreate") == 0 and ops(emulator, "productUpdate") == 0


def test_several_images_go_in_one_staging_and_one_productupdate(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    images = [image(png(c)) for c in ("blue", "red", "green")]
    results = attach_images(client, product_gid, [*images, images[0]])  # a repeat is attached once
    assert [r.outcome for r in results] == ["attached"] * 4
    assert results[0].media_gid == results[3].media_gid
    assert len({r.media_gid for r in results}) == 3
    assert ops(emulator, "stagedUploadsCreate") == 1 and ops(emulator, "productUpdate") == 1
    assert ops(emulator, "product") == 2  # one listing before, one after the mutation
    stored = {r["sha256"] for r in emulator_media.media_rows(emulator, product_gid)}
    assert stored == {i.sha256 for i in images}


def test_processing_media_are_polled_until_ready(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    emulator_media.set_processing_delay(emulator, 0.3)
    result = attach_image(client, product_gid, image(png("blue")), wait_ready_s=5, poll_every_s=0.1)
    assert (result.outcome, result.status) == ("attached", "READY")
    assert ops(emulator, "nodes") >= 1


def test_without_waiting_a_processing_media_is_attached_and_pending(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    emulator_media.set_processing_delay(emulator, 60)
    result = attach_image(client, product_gid, image(png("blue")), wait_ready_s=0)
    assert (result.outcome, result.status) == ("attached", "PROCESSING")
    assert attach_image(client, product_gid, image(png("blue")), wait_ready_s=0).outcome == "already"


def test_lost_answer_while_the_media_is_still_processing_is_recognised_by_its_source(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    emulator_media.set_processing_delay(emulator, 60)  # no CDN image yet: only originalSource names the file
    emulator.drop_answers(1, only="productUpdate")
    result = attach_image(client, product_gid, image(png("blue")), wait_ready_s=0)
    assert (result.outcome, result.status) == ("attached", "PROCESSING")
    assert ops(emulator, "productUpdate") == 1 and len(emulator_media.media_rows(emulator, product_gid)) == 1


def test_a_product_at_the_media_limit_fails_new_images_without_uploading(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    filler = attach_image(client, product_gid, image(png("blue")))
    source = emulator_media.media_rows(emulator, product_gid)[0]["source_url"]
    for _ in range(249 // 83 + 1):
        room = 250 - len(emulator_media.media_rows(emulator, product_gid))
        if room:
            add_product_media(client, product_gid, [{"originalSource": source, "alt": None}] * min(room, 83))
    assert filler.outcome == "attached" and len(emulator_media.media_rows(emulator, product_gid)) == 250
    result = attach_image(client, product_gid, image(png("red")))
    assert (result.outcome, result.reason) == ("failed", "media_limit")
    assert ops(emulator, "stagedUploadsCreate") == 1  # only the first image was ever staged
