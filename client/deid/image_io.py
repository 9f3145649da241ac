"""Image loading and saving for de-identification, with clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..preprocess import MAX_PIXELS, ImageInputError, check_size, rgb_uint8, viewed_rgb

__all__ = ["MAX_PIXELS", "ImageInputError", "check_size", "load_image", "save_image"]


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
            im = viewed_rgb(im, max_pixels)
            return rgb_uint8(np.asarray(im), max_pixels)
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
        Image.fromarray(rgb_uint8(image)).save(p)
    except (OSError, ValueError, KeyError) as exc:
        raise ImageInputError(f"{p}: could not write image ({exc})") from exc
