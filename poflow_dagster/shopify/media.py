"""Product images on Shopify, client side: list a product's media, stage image bytes, add media.

The path, chosen from the Admin GraphQL docs for our API version (2026-10):

1. ``stagedUploadsCreate`` with ``resource: IMAGE``, ``httpMethod: POST`` and ``fileSize``: one call stages
   every image of a product; each file is then POSTed as a multipart form (the target's ``parameters`` first,
   ``file`` last) to the target ``url``, without the shop's token. POST (not PUT) because the signed policy
   then enforces the declared size, and it is the form our bulk upload already speaks.
2. ``productUpdate(product: {id}, media: [CreateMediaInput!])`` with the target's ``resourceUrl`` as
   ``originalSource``, ``mediaContentType: IMAGE`` and the alt text: several images of one product in one
   call. ``productCreateMedia`` is deprecated ("use productUpdate or productSet"); ``productSet(files:)``
   replaces the product's whole file list, so it would drop media the merchant added; ``fileCreate`` +
   ``fileUpdate(referencesToAdd:)`` takes two mutations per batch for the same result.
3. Media are processed asynchronously: the answer shows ``UPLOADED``; ``status`` moves through
   ``PROCESSING`` to ``READY`` or ``FAILED`` (with ``mediaErrors``), read back with ``nodes(ids:)``.

Recognising our own uploads (idempotency across crashes): each file is staged under a deterministic name,
``poflow-<sha256[:24]>.<ext>``. Shopify keeps that name in the media's CDN ``image.url`` (adding a suffix
before the extension when the name is taken) and in ``originalSource.url`` while the image is still
processing (``image`` is null until ``READY``), so one ``Product.media`` listing tells which images a product
already has. ``productUpdate`` is sent once per try (``max_attempts=1``): after a lost answer the caller lists
again before sending the missing ones, so a retry never attaches twice.

Limits (docs): 250 media per product, 20 MB and 20 megapixels per image. Costs: each mutation 10 points; the
listing ``2 + 100 x 3`` per page of 100 media.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from poflow_dagster.shopify.client import ShopifyClient, ShopifyUnreachableError

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_MEDIA_PER_PRODUCT",
    "MediaInfo",
    "StagedImage",
    "add_product_media",
    "list_product_media",
    "media_by_ids",
    "poflow_image_key",
    "stage_images",
]

MAX_MEDIA_PER_PRODUCT = 250
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MEDIA_PAGE_SIZE = 100
#: ``nodes(ids:)`` takes at most 250 ids.
MAX_NODE_IDS = 250
#: The name part that marks a file as ours: ``poflow-`` and 24 hex digits of its sha256.
_OUR_NAME = re.compile(r"(?:^|/)(poflow-[0-9a-f]{24})(?:[._][^/]*)?$")

_MEDIA_FIELDS = """
  id alt status mediaContentType
  mediaErrors { code message details }
  ... on MediaImage { image { url } originalSource { url } }
"""

PRODUCT_MEDIA_QUERY = """
query PoflowProductMedia($id: ID!, $after: String) {
  product(id: $id) {
    id
    media(first: %d, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { %s }
    }
  }
}
""" % (MEDIA_PAGE_SIZE, _MEDIA_FIELDS)

MEDIA_NODES_QUERY = """
query PoflowMediaNodes($ids: [ID!]!) { nodes(ids: $ids) { ... on MediaImage { %s } } }
""" % _MEDIA_FIELDS

STAGE_IMAGES_MUTATION = """
mutation PoflowStageImages($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url resourceUrl parameters { name value } }
    userErrors { field message }
  }
}
"""

ADD_MEDIA_MUTATION = """
mutation PoflowAddMedia($product: ProductUpdateInput!, $media: [CreateMediaInput!]!) {
  productUpdate(product: $product, media: $media) {
    product { id }
    userErrors { field message }
  }
}
"""


@dataclass(frozen=True)
class MediaInfo:
    """One media of a product as Shopify reports it."""

    gid: str
    alt: str | None
    status: str  # UPLOADED, PROCESSING, READY or FAILED
    error_code: str | None
    error_message: str | None
    url: str | None  # the CDN image URL once READY
    source_url: str | None

    @property
    def poflow_key(self) -> str | None:
        """``poflow-<sha256[:24]>`` when this media is one of our uploads, else ``None``."""
        for candidate in (self.url, self.source_url):
            key = poflow_image_key(candidate)
            if key is not None:
                return key
        return None


@dataclass(frozen=True)
class StagedImage:
    """Bytes to stage under a file name."""

    filename: str
    mime_type: str
    data: bytes


def poflow_image_key(url: str | None) -> str | None:
    """The ``poflow-<24 hex>`` stem a URL's file name starts with (query string ignored), or ``None``."""
    if not url:
        return None
    found = _OUR_NAME.search(httpx.URL(url).path)
    return found.group(1) if found else None


def _media_info(node: dict[str, Any]) -> MediaInfo:
    errors = node.get("mediaErrors") or []
    first = errors[0] if errors else {}
    return MediaInfo(
        gid=str(node["id"]),
        alt=node.get("alt"),
        status=str(node.get("status") or "UPLOADED"),
        error_code=first.get("code"),
        error_message=first.get("message"),
        url=(node.get("image") or {}).get("url"),
        source_url=(node.get("originalSource") or {}).get("url"),
    )


def list_product_media(client: ShopifyClient, product_gid: str) -> list[MediaInfo] | None:
    """Every media of a product (pages of 100), or ``None`` when the product does not exist."""
    found: list[MediaInfo] = []
    after: str | None = None
    while True:
        data = client.execute(PRODUCT_MEDIA_QUERY, {"id": product_gid, "after": after})
        product = data.get("product")
        if product is None:
            return None
        connection = product.get("media") or {}
        found.extend(_media_info(n) for n in connection.get("nodes") or [] if n)
        page = connection.get("pageInfo") or {}
        if not page.get("hasNextPage"):
            return found
        after = page.get("endCursor")


def media_by_ids(client: ShopifyClient, gids: list[str]) -> dict[str, MediaInfo | None]:
    """Media by GID (``None`` for ones that no longer exist), ``nodes`` 250 at a time."""
    found: dict[str, MediaInfo | None] = {}
    for start in range(0, len(gids), MAX_NODE_IDS):
        chunk = gids[start:start + MAX_NODE_IDS]
        data = client.execute(MEDIA_NODES_QUERY, {"ids": chunk})
        for gid, node in zip(chunk, data.get("nodes") or []):
            found[gid] = _media_info(node) if node and node.get("id") else None
    return found


def stage_images(client: ShopifyClient, images: list[StagedImage]) -> list[str | Exception]:
    """Stage and upload each image; per image its ``resourceUrl`` or the exception that stopped it.

    One ``stagedUploadsCreate`` for all of them; the uploads go to the signed URL with a plain HTTP client
    (never the shop's token). A failed upload does not stop the others.
    """
    if not images:
        return []
    data = client.execute(STAGE_IMAGES_MUTATION, {"input": [
        {"resource": "IMAGE", "filename": i.filename, "mimeType": i.mime_type, "httpMethod": "POST",
         "fileSize": str(len(i.data))}
        for i in images
    ]})
    targets = (data.get("stagedUploadsCreate") or {}).get("stagedTargets") or []
    if len(targets) != len(images):
        raise ShopifyUnreachableError("shopify_unreachable", "stagedUploadsCreate returned too few targets")
    return [_upload(client, target, image) for target, image in zip(targets, images)]


def _upload(client: ShopifyClient, target: dict[str, Any], image: StagedImage) -> str | Exception:
    parameters = {p["name"]: p["value"] for p in target.get("parameters") or []}
    files = {"file": (image.filename, image.data, image.mime_type)}
    try:
        response = httpx.post(str(target["url"]), data=parameters, files=files, timeout=client.timeout)
    except httpx.TransportError as exc:
        return ShopifyUnreachableError("shopify_unreachable", f"cannot reach the staged upload URL ({type(exc).__name__})")
    if response.status_code not in (200, 201, 204):
        return ShopifyUnreachableError("shopify_unreachable", f"staged upload answered HTTP {response.status_code}")
    resource = target.get("resourceUrl") or f"{str(target['url']).rstrip('/')}/{parameters.get('key', '')}"
    return str(resource)


def add_product_media(client: ShopifyClient, product_gid: str, media: list[dict[str, Any]]) -> None:
    """``productUpdate(media:)`` once (no resend: the caller lists and retries after a lost answer).

    ``media`` items are ``{"originalSource", "alt"}``. Raises :class:`ShopifyUserError` for user errors
    (``Product does not exist``, the media limit) and :class:`ShopifyUnreachableError` when the answer
    did not arrive (the media may or may not have been added).
    """
    client.execute(ADD_MEDIA_MUTATION, {
        "product": {"id": product_gid},
        "media": [{"originalSource": m["originalSource"], "alt": m.get("alt"), "mediaContentType": "IMAGE"}
                  for m in media],
    }, max_attempts=1)
