"""Product media in the Shopify emulator: staged image uploads, ``productUpdate(media:)``, ``Product.media``.

Mixed into the emulator's root value (:class:`MediaRootMixin`); the schema additions are :data:`MEDIA_SDL`.
What it models, after the Admin GraphQL docs (API 2026-10):

* ``stagedUploadsCreate`` with ``resource: IMAGE`` (``httpMethod: POST``, optional ``fileSize``) hands out the
  emulator's upload URL with form parameters and a ``resourceUrl`` (``<url>/<key>``) to pass as the media's
  ``originalSource``. The POSTed bytes are kept in memory; a file larger than the declared ``fileSize`` or than
  20 MB is refused with HTTP 400 (``EntityTooLarge``), like the signed upload policy.
* ``productUpdate(product: {id}, media: [CreateMediaInput!])`` adds media to a product (``productCreateMedia``
  is deprecated). An unknown product is the user error ``["id"] "Product does not exist"``; more than
  :data:`MAX_MEDIA_PER_PRODUCT` media on one product is refused as a whole. Only ``id`` of the product input is
  taken here. The answer shows new media as ``UPLOADED``; reads show ``PROCESSING`` until the processing delay
  (:func:`set_processing_delay`, default 0 s) has passed, then ``READY`` or ``FAILED`` with ``mediaErrors``
  (``IMAGE_DOWNLOAD_FAILURE`` when nothing was uploaded at the source, ``IMAGE_PROCESSING_FAILURE`` for bytes
  Pillow cannot decode, ``INVALID_IMAGE_FILE_SIZE``, ``INVALID_IMAGE_RESOLUTION`` over 20 megapixels).
* ``MediaImage``: ``alt``, ``status``, ``mediaErrors``, ``mimeType``, ``originalSource { url fileSize }`` (the
  staged URL, which carries the uploaded file name) and ``image { url width height altText }`` only when
  ``READY``; the image URL is a CDN-style ``/cdn/shop/files/<file name>?v=...`` where the file name is the
  uploaded one (``_<8 hex>`` is added before the extension when another file already has that name).
* ``productDelete(input: {id})`` removes a product with its variants and media.
* Costs: both mutations are plain mutations (10 points); ``media(first:)`` is a connection like the others.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MEDIA_SDL", "MediaRootMixin", "image_upload_problem", "media_rows", "set_processing_delay"]

MEDIA_IMAGE_GID = "gid://shopify/MediaImage/"
_PRODUCT_GID = "gid://shopify/Product/"
#: Shopify's documented ceilings for product images.
MAX_MEDIA_PER_PRODUCT = 250
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 20_000_000
_MEDIA_ID_START = 30_000_000

MEDIA_SDL = """
extend enum StagedUploadTargetGenerateUploadResource { IMAGE }
enum MediaStatus { FAILED PROCESSING READY UPLOADED }
enum MediaContentType { EXTERNAL_VIDEO IMAGE MODEL_3D VIDEO }
enum MediaPreviewImageStatus { FAILED PROCESSING READY UPLOADED }
enum MediaErrorCode {
  IMAGE_DOWNLOAD_FAILURE
  IMAGE_PROCESSING_FAILURE
  INVALID_IMAGE_ASPECT_RATIO
  INVALID_IMAGE_FILE_SIZE
  INVALID_IMAGE_RESOLUTION
  UNKNOWN
  UNSUPPORTED_IMAGE_FILE_TYPE
}
type MediaError { code: MediaErrorCode! details: String message: String! }
type Image { id: ID url: URL! altText: String width: Int height: Int }
type MediaImageOriginalSource { fileSize: Int url: URL }
type MediaPreviewImage { image: Image status: MediaPreviewImageStatus! }
interface Media {
  alt: String
  id: ID!
  mediaContentType: MediaContentType!
  mediaErrors: [MediaError!]!
  preview: MediaPreviewImage
  status: MediaStatus!
}
type MediaImage implements Media & Node {
  alt: String
  id: ID!
  mediaContentType: MediaContentType!
  mediaErrors: [MediaError!]!
  preview: MediaPreviewImage
  status: MediaStatus!
  image: Image
  mimeType: String
  originalSource: MediaImageOriginalSource
  createdAt: DateTime!
  updatedAt: DateTime!
}
type MediaEdge { cursor: String! node: Media! }
type MediaConnection { edges: [MediaEdge!]! nodes: [Media!]! pageInfo: PageInfo! }
extend type Product {
  media(first: Int, after: String, reverse: Boolean = false): MediaConnection!
}
input CreateMediaInput { alt: String mediaContentType: MediaContentType! originalSource: String! }
input ProductUpdateInput { id: ID! }
input ProductDeleteInput { id: ID! }
type ProductUpdatePayload { product: Product userErrors: [UserError!]! }
type ProductDeletePayload { deletedProductId: ID shop: Shop! userErrors: [UserError!]! }
extend type Mutation {
  productUpdate(product: ProductUpdateInput, media: [CreateMediaInput!]): ProductUpdatePayload
  productDelete(input: ProductDeleteInput!, synchronous: Boolean = true): ProductDeletePayload
}
"""

_DDL = """
CREATE TABLE IF NOT EXISTS product_media (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    alt TEXT,
    filename TEXT NOT NULL,
    source_url TEXT NOT NULL,
    mime_type TEXT,
    byte_size INTEGER,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    error_code TEXT,
    error_message TEXT,
    ready_at REAL NOT NULL,
    created_at TEXT NOT NULL
)
"""

#: Declared ``fileSize`` per staged image key (keys are unique UUID paths, so one map serves every emulator).
_DECLARED_SIZES: dict[str, int | None] = {}
_DECLARED_LOCK = threading.Lock()


def image_upload_problem(key: str, data: bytes) -> str | None:
    """Why a staged upload to an image ``key`` is refused (too large for its policy), or ``None``."""
    with _DECLARED_LOCK:
        if key not in _DECLARED_SIZES:
            return None  # not an image target: the bulk upload rules apply
        declared = _DECLARED_SIZES[key]
    limit = min(declared, MAX_IMAGE_BYTES) if declared is not None else MAX_IMAGE_BYTES
    if len(data) > limit:
        return f"EntityTooLarge: {len(data)} bytes exceed the upload policy's {limit}"
    return None


def set_processing_delay(handle: Any, seconds: float) -> None:
    """Make new media stay ``PROCESSING`` for ``seconds`` before ``READY``/``FAILED`` (tests)."""
    handle._server.app.store.media_processing_delay = float(seconds)


def media_rows(handle: Any, product_gid: str | None = None) -> list[dict[str, Any]]:
    """The stored media (with the sha256 of the bytes the emulator received), oldest first (tests)."""
    store = handle._server.app.store
    _ensure_table(store)
    sql, params = "SELECT * FROM product_media ORDER BY id", ()
    if product_gid is not None:
        sql, params = "SELECT * FROM product_media WHERE product_id = ? ORDER BY id", (_number(product_gid),)
    return [dict(r) for r in store.query(sql, params)]


def _ensure_table(store: Any) -> None:
    if getattr(store, "_media_table_ready", False):
        return
    with store.transaction() as conn:
        conn.execute(_DDL)
        conn.execute("CREATE INDEX IF NOT EXISTS ix_product_media_product ON product_media(product_id)")
        conn.execute(
            "INSERT INTO sqlite_sequence(name, seq) SELECT 'product_media', ? "
            "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'product_media')", (_MEDIA_ID_START,),
        )
    store._media_table_ready = True


def _number(gid: str | None, prefix: str = _PRODUCT_GID) -> int | None:
    if not isinstance(gid, str) or not gid.startswith(prefix):
        return None
    tail = gid[len(prefix):]
    return int(tail) if tail.isdigit() else None


def _user_error(field: list[str], message: str) -> dict[str, Any]:
    return {"field": field, "message": message}


def _inspect_image(data: bytes | None) -> tuple[str | None, str | None, int | None, int | None]:
    """``(error code, message, width, height)`` for the bytes a media points at."""
    if data is None:
        return "IMAGE_DOWNLOAD_FAILURE", "Image could not be downloaded from the original source.", None, None
    if len(data) > MAX_IMAGE_BYTES:
        return "INVALID_IMAGE_FILE_SIZE", "Image file size exceeds 20 MB.", None, None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_IMAGE_PIXELS:
                return "INVALID_IMAGE_RESOLUTION", "Image resolution exceeds 20 megapixels.", width, height
            probe.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return "IMAGE_PROCESSING_FAILURE", "Image could not be processed.", None, None
    return None, None, width, height


class MediaRootMixin:
    """Media resolvers for the emulator's root value (expects ``store``, ``bulk``, ``base_url``, ``product_obj``)."""

    store: Any
    bulk: Any
    base_url: str
    product_obj: Callable[[sqlite3.Row], dict[str, Any]]

    # -- staged uploads ------------------------------------------------------------------------

    def image_target(self, target: dict[str, Any]) -> dict[str, Any]:
        """A staged upload target for one ``resource: IMAGE`` input."""
        from poflow_dagster.shopify.emulator import STAGED_UPLOAD_PATH

        key = f"tmp/emulator/products/{uuid.uuid4()}/{target['filename']}"
        declared = target.get("fileSize")
        with _DECLARED_LOCK:
            _DECLARED_SIZES[key] = int(declared) if declared is not None else None
        with self.bulk.lock:
            self.bulk.uploads[key] = None
        parameters = {"Content-Type": target["mimeType"], "success_action_status": "201", "acl": "private",
                      "key": key, "policy": hashlib.sha256(key.encode()).hexdigest()}
        url = f"{self.base_url}{STAGED_UPLOAD_PATH}"
        return {"url": url, "resourceUrl": f"{url}{key}",
                "parameters": [{"name": k, "value": v} for k, v in parameters.items()]}

    def _staged_bytes(self, source: str) -> tuple[str, bytes | None]:
        """``(file name, uploaded bytes or None)`` for a media's ``originalSource``."""
        from poflow_dagster.shopify.emulator import STAGED_UPLOAD_PATH

        path = urlsplit(source).path
        name = path.rsplit("/", 1)[-1] or "image"
        if not path.startswith(STAGED_UPLOAD_PATH) or self.bulk is None:
            return name, None  # external URLs are not fetched by the emulator
        with self.bulk.lock:
            return name, self.bulk.uploads.get(path[len(STAGED_UPLOAD_PATH):])

    # -- reads ---------------------------------------------------------------------------------

    def media_of(self, product_id: int, _info: Any, first: int | None = None, after: str | None = None,
                 reverse: bool = False) -> dict[str, Any]:
        """``Product.media``: the product's media, oldest first."""
        from poflow_dagster.shopify.emulator import _connection

        _ensure_table(self.store)
        rows = self.store.query("SELECT * FROM product_media WHERE product_id = ? ORDER BY id", (product_id,))
        return _connection(rows, self.media_obj, first, after, reverse)

    def media_node(self, gid: str) -> dict[str, Any] | None:
        """A ``MediaImage`` by GID (for ``node``/``nodes``)."""
        number = _number(gid, MEDIA_IMAGE_GID)
        if number is None:
            return None
        _ensure_table(self.store)
        rows = self.store.query("SELECT * FROM product_media WHERE id = ?", (number,))
        return self.media_obj(rows[0]) if rows else None

    def media_obj(self, row: sqlite3.Row, *, just_created: bool = False) -> dict[str, Any]:
        status = _status(row, just_created)
        image = None
        if status == "READY":
            version = int(row["ready_at"])
            image = {"id": f"gid://shopify/ImageSource/{row['id']}", "altText": row["alt"],
                     "url": f"{self.base_url}/cdn/shop/files/{row['filename']}?v={version}",
                     "width": row["width"], "height": row["height"]}
        errors = []
        if status == "FAILED":
            errors = [{"code": row["error_code"], "message": row["error_message"], "details": None}]
        preview_status = status if status != "FAILED" else "FAILED"
        return {
            "__typename": "MediaImage",
            "id": f"{MEDIA_IMAGE_GID}{row['id']}",
            "alt": row["alt"],
            "mediaContentType": "IMAGE",
            "mediaErrors": errors,
            "preview": {"image": image, "status": preview_status},
            "status": status,
            "image": image,
            "mimeType": row["mime_type"],
            "originalSource": {"url": row["source_url"], "fileSize": row["byte_size"]},
            "createdAt": row["created_at"],
            "updatedAt": row["created_at"],
        }

    # -- mutations -----------------------------------------------------------------------------

    def productUpdate(  # noqa: N802 - GraphQL field name
        self, _info: Any, product: dict[str, Any] | None = None, media: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        number = _number((product or {}).get("id"))
        row = self.store.product(number) if number is not None else None
        if row is None:
            return {"product": None, "userErrors": [_user_error(["id"], "Product does not exist")]}
        if media:
            errors = self._add_media(int(row["id"]), media)
            if errors:
                return {"product": self.product_obj(row), "userErrors": errors}
        return {"product": self.product_obj(self.store.product(int(row["id"]))), "userErrors": []}

    def productDelete(self, _info: Any, input: dict[str, Any], synchronous: bool = True) -> dict[str, Any]:  # noqa: N802, A002
        shop = {"name": "poflow emulator", "myshopifyDomain": "poflow-emulator.myshopify.com", "currencyCode": "USD"}
        number = _number(input.get("id"))
        if number is None or self.store.product(number) is None:
            return {"deletedProductId": None, "shop": shop, "userErrors": [_user_error(["id"], "Product does not exist")]}
        _ensure_table(self.store)
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM metafields WHERE owner_gid = ?", (f"{_PRODUCT_GID}{number}",))
            conn.execute("DELETE FROM products WHERE id = ?", (number,))
        return {"deletedProductId": f"{_PRODUCT_GID}{number}", "shop": shop, "userErrors": []}

    def _add_media(self, product_id: int, media: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert the media (all or none); user errors when the input or the product's limit refuses them."""
        _ensure_table(self.store)
        for i, item in enumerate(media):
            if item["mediaContentType"] != "IMAGE":
                return [_user_error(["media", str(i), "mediaContentType"], "Only images are supported here")]
            if not item["originalSource"].strip():
                return [_user_error(["media", str(i), "originalSource"], "Original source can't be blank")]
        prepared = [self._prepared(item) for item in media]
        delay = float(getattr(self.store, "media_processing_delay", 0.0))
        with self.store.transaction() as conn:
            have = conn.execute("SELECT COUNT(*) FROM product_media WHERE product_id = ?", (product_id,)).fetchone()[0]
            if have + len(media) > MAX_MEDIA_PER_PRODUCT:
                message = f"Exceeded the limit of {MAX_MEDIA_PER_PRODUCT} media per product"
                return [_user_error(["media"], message)]
            for values in prepared:
                values["filename"] = _unique_name(conn, values["filename"])
                conn.execute(
                    "INSERT INTO product_media (product_id, alt, filename, source_url, mime_type, byte_size, sha256, "
                    "width, height, error_code, error_message, ready_at, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (product_id, values["alt"], values["filename"], values["source"], values["mime"],
                     values["size"], values["sha256"], values["width"], values["height"], values["code"],
                     values["message"], time.time() + delay, self.store.now()),
                )
        return []

    def _prepared(self, item: dict[str, Any]) -> dict[str, Any]:
        name, data = self._staged_bytes(item["originalSource"])
        code, message, width, height = _inspect_image(data)
        return {
            "alt": item.get("alt"), "filename": name, "source": item["originalSource"],
            "mime": _mime_of(name), "size": len(data) if data is not None else None,
            "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "width": width, "height": height, "code": code, "message": message,
        }


def _status(row: sqlite3.Row, just_created: bool) -> str:
    if just_created:
        return "UPLOADED"
    if time.time() < float(row["ready_at"]):
        return "PROCESSING"
    return "FAILED" if row["error_code"] else "READY"


def _unique_name(conn: sqlite3.Connection, name: str) -> str:
    """The file name, or it with ``_<8 hex>`` before the extension when another file already has it."""
    if conn.execute("SELECT 1 FROM product_media WHERE filename = ?", (name,)).fetchone() is None:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = uuid.uuid4().hex[:8]
    return f"{stem}_{suffix}.{ext}" if dot else f"{name}_{suffix}"


def _mime_of(name: str) -> str | None:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
            "webp": "image/webp"}.get(ext)
