"""How an upload of many images is cut into transactions.

Every image of a transaction is held in memory until the transaction commits: its decoded
pixels, its file and de-identified copy, three ciphertexts and the pixel shares of two copies
(``client.encryption``, ``client.pixel_release``). One transaction for a whole folder of
phone photos (8 megapixels: about 90 MB each) would need tens of gigabytes, so an upload is
cut into consecutive batches of at most :data:`BATCH_PIXELS` decoded pixels and
:data:`BATCH_IMAGES` images, each its own all-or-nothing transaction. Batches commit in
order, so after a failure the images committed are exactly the first ones
(``client.errors.UploadInterrupted.uploaded``); the catalog records them, and uploading the
same folder again skips them by content hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

import numpy as np
from PIL import Image

from .images import ImageInput

#: Decoded pixels per upload transaction (about 0.7 GB of client memory with de-identified copies).
BATCH_PIXELS = 64_000_000
#: Images per upload transaction (small images: bounds the per-transaction index update).
BATCH_IMAGES = 256


def pixel_count(item: ImageInput) -> int:
    """Width x height of an image input, from the file header for a path (0 if unreadable: the
    batch that reads it reports the error)."""
    if isinstance(item, np.ndarray):
        return int(item.shape[0] * item.shape[1]) if item.ndim >= 2 else 0
    if isinstance(item, Image.Image):
        return item.width * item.height
    try:
        with Image.open(item) as im:
            return im.width * im.height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 0


def plan_batches(images: Sequence[ImageInput], max_pixels: int = BATCH_PIXELS,
                 max_images: int = BATCH_IMAGES) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` ranges covering ``images``; each holds at least one image and,
    beyond its first, stays within ``max_pixels`` and ``max_images``."""
    if max_pixels < 1 or max_images < 1:
        raise ValueError("batch limits must be positive")
    out: list[tuple[int, int]] = []
    start, pixels = 0, 0
    for i, item in enumerate(images):
        n = pixel_count(item)
        if i > start and (pixels + n > max_pixels or i - start >= max_images):
            out.append((start, i))
            start, pixels = i, 0
        pixels += n
    if start < len(images):
        out.append((start, len(images)))
    return out


class LazyImages(Sequence):
    """``load(key)`` for each key, called only when an item is read (``pooled_features`` reads a
    batch at a time): refitting on every stored image never holds them all decoded."""

    def __init__(self, keys: Sequence[Any], load: Callable[[Any], ImageInput]) -> None:
        self.keys, self.load = list(keys), load

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, i: int) -> ImageInput: ...

    @overload
    def __getitem__(self, i: slice) -> list[ImageInput]: ...

    def __getitem__(self, i: int | slice) -> ImageInput | list[ImageInput]:
        if isinstance(i, slice):
            return [self.load(k) for k in self.keys[i]]
        return self.load(self.keys[i])
