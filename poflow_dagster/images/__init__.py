"""Product images: safe concurrent fetching (:mod:`.fetch`), address policy (:mod:`.net_policy`) and
validation (:mod:`.validate`). Pure library code: no Dagster, no database."""

from poflow_dagster.images.fetch import (
    EtagCache,
    FetchResult,
    FetchSettings,
    ImageRequest,
    MemoryEtagCache,
    fetch_images,
)
from poflow_dagster.images.net_policy import AllowList, BlockedUrl, PinnedTarget, check_url, is_public_address
from poflow_dagster.images.validate import ImageRejected, ValidImage, sniff_format, validate_image

__all__ = [
    "AllowList",
    "BlockedUrl",
    "EtagCache",
    "FetchResult",
    "FetchSettings",
    "ImageRejected",
    "ImageRequest",
    "MemoryEtagCache",
    "PinnedTarget",
    "ValidImage",
    "check_url",
    "fetch_images",
    "is_public_address",
    "sniff_format",
    "validate_image",
]
