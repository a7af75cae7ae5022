"""De-duplication of one draft's images: the same bytes, or the same picture at another size, is kept once.

Same sha256 = same image. Images whose perceptual hashes (64-bit ``imagehash.phash``) differ in at most
:data:`PHASH_MAX_DISTANCE` bits are the same picture: the largest is kept (pixels, then bytes; then the earliest
candidate), the others are duplicates of it. Only within one draft: the same image may belong to several products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["PHASH_MAX_DISTANCE", "Facts", "Hashed", "Verdict", "choose", "phash_distance"]

#: Perceptual hashes at most this many bits apart (of 64) are one picture (resized, re-encoded).
PHASH_MAX_DISTANCE = 6


class Hashed(Protocol):
    sha256: str
    phash: str
    width: int
    height: int
    byte_size: int


@dataclass(frozen=True)
class Facts:
    """What de-duplication knows of an image, before (or without) its ``images`` row."""

    sha256: str
    phash: str
    width: int
    height: int
    byte_size: int

    @classmethod
    def of(cls, image: Any) -> Facts:
        """From a :class:`~.validate.ValidImage` (``byte_length``) or a stored image (``byte_size``)."""
        size = image.byte_size if hasattr(image, "byte_size") else image.byte_length
        return cls(image.sha256, image.phash, image.width, image.height, size)


@dataclass(frozen=True)
class Verdict:
    """For each image (by position in the input): kept, or the sha256 of the kept image it duplicates."""

    kept: list[int]
    duplicate_of: dict[int, str]


def phash_distance(a: str, b: str) -> int:
    """Bits that differ between two hex perceptual hashes (a bad hash is never near anything)."""
    try:
        return bin(int(a, 16) ^ int(b, 16)).count("1")
    except ValueError:
        return 64


def _rank(image: Hashed) -> tuple[int, int]:
    return image.width * image.height, image.byte_size


def choose(images: Sequence[Hashed]) -> Verdict:
    """Which of one draft's images to keep, in order of preference among near-duplicates.

    Greedy by size: the largest image claims every not-yet-claimed image within the distance (or with its
    sha256). The result names, for every duplicate, the sha256 of the image kept instead."""
    order = sorted(range(len(images)), key=lambda i: (-_rank(images[i])[0], -_rank(images[i])[1], i))
    kept: list[int] = []
    duplicate_of: dict[int, str] = {}
    winner_by_sha: dict[str, str] = {}  # sha256 seen -> sha256 of the image kept for it
    for index in order:
        image = images[index]
        if image.sha256 in winner_by_sha:
            duplicate_of[index] = winner_by_sha[image.sha256]
            continue
        winner = next((k for k in kept if phash_distance(images[k].phash, image.phash) <= PHASH_MAX_DISTANCE), None)
        if winner is None:
            kept.append(index)
            winner_by_sha[image.sha256] = image.sha256
        else:
            duplicate_of[index] = winner_by_sha[image.sha256] = images[winner].sha256
    return Verdict(kept=sorted(kept), duplicate_of=duplicate_of)
