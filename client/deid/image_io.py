"""Image loading and saving for de-identification, with clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Largest image accepted, in pixels (width x height). About 8K x 6K.
MAX_PIXELS = 50_000_000


class ImageInputError(ValueError):
    """Raised when an image cannot be used for de-identification (message says why)."""


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ImageInputError if an image is empty or larger than ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise ImageInputError(f"image is empty ({width}x{height})")
    if width * height > max_pixels:
        raise ImageInputError(
            f"image is too large: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels; downscale it first (e.g. to at most 8000x6000)"
        )


def to_rgb_uint8(image: np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return a contiguous HxWx3 uint8 RGB copy of a grey, grey+alpha, RGB or RGBA array."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise ImageInputError(f"expected an HxW or HxWxC (C in 1..4) image array, got shape {arr.shape}")
    check_size(arr.shape[1], arr.shape[0], max_pixels)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageInputError("image contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        arr = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
            raise ImageInputError(f"integer image of dtype {arr.dtype} has values outside 0..255")
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    channels = arr.shape[2]
    if channels in (1, 2):  # grey (+ alpha): replicate grey, drop alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif channels == 4:  # RGBA: drop alpha
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load an image file as HxWx3 uint8 RGB; raise ImageInputError with a clear message."""
    p = Path(path)
    if not p.exists():
        raise ImageInputError(f"{p}: no such file")
    if not p.is_file():
        raise ImageInputError(f"{p}: not a regular file")
    try:
        with Image.open(p) as im:
            check_size(im.width, im.height, max_pixels)  # before decoding the pixels
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im).astype(np.float64)
                top = arr.max(initial=0.0)
                arr = (arr / (top if top > 0 else 1.0) * 255.0).astype(np.uint8)
                return to_rgb_uint8(arr, max_pixels)
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGBA").convert("RGB") if "A" in im.mode or im.mode == "P" else im.convert("RGB")
            return to_rgb_uint8(np.asarray(im), max_pixels)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{p}: image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(f"{p}: not a readable image (unknown or corrupt format)") from exc
    except OSError as exc:
        raise ImageInputError(f"{p}: could not decode image ({exc})") from exc


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Save an RGB uint8 array to ``path`` (format from the extension)."""
    p = Path(path)
    try:
        Image.fromarray(to_rgb_uint8(image)).save(p)
    except (OSError, ValueError, KeyError) as exc:
        raise ImageInputError(f"{p}: could not write image ({exc})") from exc
