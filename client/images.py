"""Image inputs of the SDK: a path, a PIL image or an RGB array, as file bytes + decoded RGB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .preprocess import ImageInputError, viewed_rgb

ImageInput = str | Path | np.ndarray | Image.Image
#: ISO-BMFF brands of HEIC/HEIF files (phone photos), which Pillow does not read here.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
HEIF_UNSUPPORTED = "HEIC/HEIF is not supported: convert it to JPEG or PNG first"


def is_heif(head: bytes) -> bool:
    """Whether a file's first bytes are a HEIC/HEIF container (by its ISO-BMFF brand)."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def load_image_bytes(item: ImageInput) -> tuple[bytes, Image.Image]:
    """File bytes (PNG for arrays) and the decoded RGB image; clear errors for bad files."""
    if isinstance(item, (str, Path)):
        data = Path(item).read_bytes()
        name = str(item)
    elif isinstance(item, Image.Image):
        buf = io.BytesIO()
        viewed_rgb(item).save(buf, format="PNG", compress_level=1)
        data, name = buf.getvalue(), "<PIL image>"
    elif isinstance(item, np.ndarray):
        from .preprocess import to_pil

        buf = io.BytesIO()
        to_pil(item).save(buf, format="PNG", compress_level=1)
        data, name = buf.getvalue(), "<array>"
    else:
        raise TypeError(f"unsupported image input {type(item).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return data, viewed_rgb(im)
    except ImageInputError as exc:
        raise ImageInputError(f"{name}: {exc}") from None
    except UnidentifiedImageError:
        if is_heif(data):
            raise ValueError(f"{name}: {HEIF_UNSUPPORTED}") from None
        raise ValueError(f"{name}: not an image file") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{name}: corrupt or truncated image ({exc})") from None
