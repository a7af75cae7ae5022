"""Product media in the emulator, through the real client over HTTP: staged image uploads, productUpdate(media:),
Product.media with status and mediaErrors, limits, costs and productDelete."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from PIL import Image

from poflow_dagster.shopify import emulator_media
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, ShopifyUserError
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.media import (
    StagedImage,
    add_product_media,
    list_product_media,
    media_by_ids,
    poflow_image_key,
    stage_images,
)
from poflow_dagster.shopify.rate_budget import InProcessBudget

TOKEN = "shpat_media_test"


def png_bytes(color: str = "red", size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


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
    spec = ProductSpec(sku="IMG-1", title="Blue Mug", price=Decimal("9.50"), handle="blue-mug")
    return client.product_set(spec).product_gid


def stage_one(client: ShopifyClient, data: bytes, name: str = "poflow-0123456789abcdef01234567.png") -> str:
    (source,) = stage_images(client, [StagedImage(name, "image/png", data)])
    assert isinstance(source, str), source
    return source


def test_staged_image_upload_keeps_the_exact_bytes_and_media_reads_back_ready_with_alt(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    data = png_bytes()
    source = stage_one(client, data)
    add_product_media(client, product_gid, [{"originalSource": source, "alt": "Blue Mug"}])
    (media,) = list_product_media(client, product_gid) or []
    assert media.status == "READY" and media.alt == "Blue Mug" and media.error_code is None
    assert media.url is not None and "/poflow-0123456789abcdef01234567.png" in media.url
    assert media.poflow_key == "poflow-0123456789abcdef01234567"
    (row,) = emulator_media.media_rows(emulator, product_gid)
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["byte_size"] == len(data)
    assert (row["width"], row["height"]) == (8, 6)


def test_media_is_processing_with_no_image_until_the_delay_passes_but_the_source_name_is_visible(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    emulator_media.set_processing_delay(emulator, 60)
    add_product_media(client, product_gid, [{"originalSource": stage_one(client, png_bytes()), "alt": "x"}])
    (media,) = list_product_media(client, product_gid) or []
    assert media.status == "PROCESSING" and media.url is None
    assert media.poflow_key == "poflow-0123456789abcdef01234567"  # recognisable from originalSource
    assert media_by_ids(client, [media.gid])[media.gid].status == "PROCESSING"


def test_undecodable_bytes_become_failed_media_with_a_media_error(
    client: ShopifyClient, product_gid: str
) -> None:
    add_product_media(client, product_gid, [{"originalSource": stage_one(client, b"not an image at all"), "alt": "x"}])
    (media,) = list_product_media(client, product_gid) or []
    assert media.status == "FAILED" and media.error_code == "IMAGE_PROCESSING_FAILURE" and media.url is None


def test_a_source_nobody_uploaded_to_fails_with_a_download_error(client: ShopifyClient, product_gid: str) -> None:
    (target,) = client.execute(
        'mutation { stagedUploadsCreate(input: [{resource: IMAGE, filename: "a.png", mimeType: "image/png", '
        'httpMethod: POST}]) { stagedTargets { resourceUrl } userErrors { message } } }'
    )["stagedUploadsCreate"]["stagedTargets"]
    add_product_media(client, product_gid, [{"originalSource": target["resourceUrl"], "alt": None}])
    (media,) = list_product_media(client, product_gid) or []
    assert (media.status, media.error_code) == ("FAILED", "IMAGE_DOWNLOAD_FAILURE")


def test_upload_larger_than_the_declared_file_size_is_refused_by_the_policy(client: ShopifyClient) -> None:
    (target,) = client.execute(
        'mutation { stagedUploadsCreate(input: [{resource: IMAGE, filename: "a.png", mimeType: "image/png", '
        'httpMethod: POST, fileSize: "10"}]) { stagedTargets { url parameters { name value } } userErrors { message } } }'
    )["stagedUploadsCreate"]["stagedTargets"]
    form = {p["name"]: p["value"] for p in target["parameters"]}
    response = httpx.post(target["url"], data=form, files={"file": ("a.png", png_bytes(), "image/png")})
    assert response.status_code == 400 and "EntityTooLarge" in response.text


def test_unknown_product_is_the_real_user_error(client: ShopifyClient) -> None:
    source = stage_one(client, png_bytes())
    with pytest.raises(ShopifyUserError) as refused:
        add_product_media(client, "gid://shopify/Product/999999", [{"originalSource": source, "alt": "x"}])
    assert refused.value.user_errors == [{"field": ["id"], "message": "Product does not exist"}]


def test_deleted_product_lists_as_none_and_its_media_go_with_it(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    add_product_media(client, product_gid, [{"originalSource": stage_one(client, png_bytes()), "alt": "x"}])
    deleted = client.execute("mutation($id: ID!) { productDelete(input: {id: $id}) { deletedProductId } }",
                             {"id": product_gid})
    assert deleted["productDelete"]["deletedProductId"] == product_gid
    assert list_product_media(client, product_gid) is None
    assert emulator_media.media_rows(emulator) == []


def test_more_than_250_media_on_one_product_are_refused_as_a_whole(
    client: ShopifyClient, emulator: EmulatorHandle, product_gid: str
) -> None:
    source = stage_one(client, png_bytes())
    for _ in range(5):
        add_product_media(client, product_gid, [{"originalSource": source, "alt": None}] * 50)
    with pytest.raises(ShopifyUserError) as refused:
        add_product_media(client, product_gid, [{"originalSource": source, "alt": None}])
    assert "limit" in refused.value.user_errors[0]["message"]
    listed = list_product_media(client, product_gid) or []
    assert len(listed) == 250 and len({m.gid for m in listed}) == 250  # paged in 100s, no repeats
    names = {m.url.rsplit("/", 1)[-1].split("?")[0] for m in listed if m.url}
    assert len(names) == 250  # a taken file name gets a suffix, and is still recognised as ours
    assert {m.poflow_key for m in listed} == {"poflow-0123456789abcdef01234567"}


def test_media_listing_and_mutations_cost_what_the_docs_say(client: ShopifyClient, product_gid: str) -> None:
    before = client.stats.points
    source = stage_one(client, png_bytes())
    add_product_media(client, product_gid, [{"originalSource": source, "alt": None}])
    assert client.stats.points - before == 20  # stagedUploadsCreate + productUpdate, 10 each
    before = client.stats.points
    list_product_media(client, product_gid)
    assert client.stats.points - before == 1 + 2 + 100 * 3  # product + media connection of 100 nodes


def test_poflow_image_key_reads_cdn_and_staged_urls() -> None:
    sha = "ab" * 12
    assert poflow_image_key(f"https://cdn.shopify.com/s/files/1/2/files/poflow-{sha}.png?v=17") == f"poflow-{sha}"
    assert poflow_image_key(f"https://cdn.shopify.com/files/poflow-{sha}_3f2a9c1d.jpg?v=1") == f"poflow-{sha}"
    assert poflow_image_key(f"https://x.example/tmp/9/products/uuid/poflow-{sha}.webp") == f"poflow-{sha}"
    assert poflow_image_key("https://cdn.shopify.com/files/merchant-photo.png") is None
    assert poflow_image_key(None) is None
