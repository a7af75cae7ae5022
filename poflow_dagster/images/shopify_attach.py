"""The :class:`~poflow_dagster.images.collect.AttachFn` of a PO run: attach a draft's stored image to its Shopify
product through :func:`~poflow_dagster.images.attach.attach_image`.

For each image: the draft's product comes from its ``shopify_products`` link (a draft without one, or linked in
another shop, is ``skipped`` with the reason); alt text is the product's title (the draft's); the media GID recorded
for that image in ``draft_images`` is passed on, so a re-run recognises the media without a new upload.
``collect_images`` hands over one image at a time as each draft's images are ready, so attaching is per image
(one media listing, one staged upload, one ``productUpdate`` each): images appear on product pages as they arrive.

Shopify errors the client gave up on (unreachable, auth, throttling past its budget) fail that image; after the
first of them the shop is not asked again in this run (every later image fails at once with the same reason): a
shop that is away costs one client retry budget, not one per image. A re-run attaches what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from poflow_dagster.images.attach import AttachResult, ImageToAttach, attach_image
from poflow_dagster.images.store import StoredImage
from poflow_dagster.shopify.client import ShopifyClient, ShopifyError
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord
from poflow_dagster.store.schema import DraftImage, ShopifyProduct

__all__ = ["NO_PRODUCT", "OTHER_SHOP", "ShopifyAttach", "shopify_attach"]

#: Reasons an image is skipped rather than attached (the draft has no product of poflow's in this shop).
NO_PRODUCT = "no_shopify_product"
OTHER_SHOP = "product_in_another_shop"


@dataclass
class ShopifyAttach:
    """Attaches stored images to the Shopify products of drafts in shop ``shop_url`` (see the module)."""

    db: Database
    client: ShopifyClient
    shop_url: str
    #: How long each new image's processing is awaited: a PO's images attach one after another, and an image
    #: still processing is attached all the same (Shopify finishes it; its status shows on the product).
    wait_ready_s: float = 3.0
    unavailable: str | None = None  # set after the shop failed once: later images fail without a request

    def __call__(self, draft: DraftRecord, image: StoredImage) -> AttachResult:
        if self.unavailable is not None:
            return AttachResult(image.sha256, "failed", reason=self.unavailable,
                                note="the shop failed earlier in this run; a re-run attaches this image")
        link = self._link(draft.id)
        if link is None:
            return AttachResult(image.sha256, "skipped", reason=NO_PRODUCT,
                                note=f"{draft.sku} has no Shopify product of poflow's")
        product_gid, shop_url = link
        if shop_url.rstrip("/") != self.shop_url.rstrip("/"):
            return AttachResult(image.sha256, "skipped", reason=OTHER_SHOP,
                                note=f"{draft.sku}'s product lives in {shop_url}")
        wanted = ImageToAttach(sha256=image.sha256, mime_type=image.mime_type, byte_size=image.byte_size,
                               source=image.path, alt=draft.title[:512],
                               known_media_gid=self._known_media(draft.id, image.sha256))
        try:
            return attach_image(self.client, product_gid, wanted, wait_ready_s=self.wait_ready_s)
        except ShopifyError as error:
            self.unavailable = error.code if error.code.startswith("shopify") else f"shopify_{error.code}"
            return AttachResult(image.sha256, "failed", reason=self.unavailable, note=error.message)

    def _link(self, draft_id: int) -> tuple[str, str] | None:
        """The draft's Shopify product GID and shop, or ``None`` when it has none."""
        with self.db.session() as session:
            row = session.execute(select(ShopifyProduct.product_gid, ShopifyProduct.shop_url)
                                  .where(ShopifyProduct.draft_id == draft_id)).first()
        return (row[0], row[1]) if row is not None else None

    def _known_media(self, draft_id: int, sha256: str) -> str | None:
        """The media GID recorded for this image of this draft (an earlier run attached it), if any."""
        with self.db.session() as session:
            return session.scalar(select(DraftImage.media_gid).where(
                DraftImage.draft_id == draft_id, DraftImage.sha256 == sha256, DraftImage.media_gid.is_not(None))
                .limit(1))


def shopify_attach(db: Database, client: ShopifyClient, shop_url: str) -> Callable[[DraftRecord, StoredImage],
                                                                                  AttachResult]:
    """The attach function ``collect_images`` calls for each kept image of a PO run."""
    return ShopifyAttach(db, client, shop_url)
