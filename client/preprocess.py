"""Image preprocessing shared by the data owner and the querier (must be bit-identical).

Steps: load as RGB (:func:`viewed_rgb`) -> resize the shorter side to
``round(resolution / crop_fraction)`` (bicubic) -> centre crop ``resolution x resolution`` ->
scale to roughly [-1, 1] with
``(pixel - 127) / 128``, the normalisation the TensorFlow EfficientNet-Lite checkpoints
were trained with (it classifies the sample photos more confidently than ImageNet
mean/std; see ``tests/unit/test_model.py``).

The crop fraction is part of the registered model (``arch["preprocess"]``, written by the
owner at registration, read by the querier from the servers), so owner and querier always
agree: :data:`CROP_FRACTION` for models registered now, :data:`LEGACY_CROP_FRACTION` for an
arch that does not say (registered before it was recorded).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:  # torch is imported where used, so de-identification loads without it
    import torch

MEAN = 127.0
STD = 128.0
#: Share of the shorter side the centre crop keeps. 1.0 (the shorter side resized to the input
#: size, only the longer side's ends cut; was ImageNet's 0.875) since 2026-12-03, at the same
#: secure cost (the input size is unchanged). Measured with ``benchmarks.quality``'s data and
#: the shrunk-whitened PCA-128, 0.875 -> 1.0 (paired bootstrap 95% intervals): at 96 px copy
#: detection 0.655 -> 0.653 [-0.014, +0.010], same person 0.755 -> 0.783 [-0.001, +0.059] (ORL
#: 0.798 -> 0.857, Yale 0.733 -> 0.727, 14 news photos 0.378 -> 0.349); at 128 px copy 0.653 ->
#: 0.649, same person 0.787 -> 0.809 (all three face sets up). Squashing the whole image and
#: letterboxing were measured too: no better (letterbox: copy -0.028).
CROP_FRACTION = 1.0
#: The ImageNet-style crop of models registered before the crop was recorded in their arch.
LEGACY_CROP_FRACTION = 0.875

ImageLike = np.ndarray | Image.Image | str | Path


#: Largest image accepted, in pixels (width x height). About 8K x 6K.
MAX_PIXELS = 50_000_000


class ImageInputError(ValueError):
    """Raised when an image cannot be used (the message says why)."""


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ImageInputError if an image is empty or larger than ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise ImageInputError(f"image is empty ({width}x{height})")
    if width * height > max_pixels:
        raise ImageInputError(
            f"image is too large: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels; downscale it first (e.g. to at most 8000x6000)"
        )


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    """Pixel values of any supported dtype -> uint8 (bool, float in [0, 1] or [0, 255], uint16, ints)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageInputError("image contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if arr.dtype != np.uint8:
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
            raise ImageInputError(f"integer image of dtype {arr.dtype} has values outside 0..255")
        return arr.astype(np.uint8)
    return arr


def rgb_uint8(image: np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image array (HxW grey, HxWxC with C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; bool, uint8,
    uint16, other integers in 0..255, or float in [0, 1] or [0, 255]) -> contiguous HxWx3 uint8 RGB
    (alpha dropped). The one array normalisation of the client (preprocessing and de-identification);
    raises ImageInputError (a ValueError) for a bad shape, NaN, out-of-range values or > max_pixels."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise ImageInputError(f"expected an HxW or HxWxC (C in 1..4) image array, got shape {arr.shape}")
    check_size(arr.shape[1], arr.shape[0], max_pixels)
    arr = _as_uint8(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] in (1, 2):  # grey (+ alpha): replicate grey, drop alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def upright(im: Image.Image) -> Image.Image:
    """The image as a viewer shows it: rotated / mirrored by its EXIF orientation tag (phone photos
    store portrait shots as landscape pixels + a tag), the tag removed; unchanged without one.
    Part of :func:`viewed_rgb`, which every decoder of a file's bytes uses."""
    return ImageOps.exif_transpose(im)


#: Background that transparent pixels are composited onto (what most viewers show).
BACKGROUND = (255, 255, 255)
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _eight_bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grey image -> 8-bit grey ("L") by the array rule of
    :func:`rgb_uint8` (16-bit: the high byte; float: [0, 1] or [0, 255]); 32-bit integers in
    0..255 are kept, in 0..65535 take the high byte. Pillow's own ``convert`` clips instead, which
    turns a 16-bit scan almost white."""
    arr = np.asarray(im)
    if im.mode == "I":
        top = int(arr.max(initial=0))
        if arr.min(initial=0) < 0 or top > 65535:
            raise ImageInputError("32-bit integer image with values outside 0..65535")
        arr = arr.astype(np.uint16) if top > 255 else arr.astype(np.uint8)
    elif arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.uint16)  # I;16B and friends arrive big-endian
    return Image.fromarray(_as_uint8(arr))  # a 2-D uint8 array: mode "L"


def viewed_rgb(im: Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A decoded file as the RGB pixels a viewer shows: EXIF orientation applied (:func:`upright`),
    16-bit / 32-bit / float grey scaled to 8 bits, transparency composited onto :data:`BACKGROUND`
    (palette images with a transparent colour too), CMYK / YCbCr / palette converted. Every place
    that decodes a file's bytes (features, de-identification, pixel shares, retrieval) uses it, so
    the owner's features, de-identified copy and pixel shares and the querier's features all see
    the same pixels. Raises :class:`ImageInputError` for a colour mode it cannot convert or an
    image over ``max_pixels`` (checked before the pixels of a lazily opened file are decoded)."""
    check_size(im.width, im.height, max_pixels)
    im = upright(im)
    if im.mode in _HIGH_DEPTH:
        im = _eight_bit(im)
    try:
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", rgba.size, BACKGROUND)
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return im if im.mode == "RGB" else im.convert("RGB")
    except ValueError as exc:  # e.g. LAB or multi-channel TIFFs
        raise ImageInputError(f"unsupported colour mode {im.mode} ({exc}); save the image as RGB") from None


def to_pil(image: ImageLike) -> Image.Image:
    """Any supported image (array HxW / HxWx3 / HxWx4, PIL image, file path) -> RGB PIL image."""
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return viewed_rgb(im)
    if isinstance(image, Image.Image):
        return viewed_rgb(image)
    if isinstance(image, np.ndarray):
        return Image.fromarray(rgb_uint8(image))
    raise TypeError(f"unsupported image type {type(image).__name__}")


def preprocess_spec() -> dict[str, float]:
    """What a model registered now records as ``arch["preprocess"]``."""
    return {"crop_fraction": CROP_FRACTION}


def crop_fraction_of(arch: dict) -> float:
    """The crop fraction a registered model's features were computed with (see the module doc)."""
    spec = arch.get("preprocess")
    if spec is None:
        return LEGACY_CROP_FRACTION
    value = float(spec.get("crop_fraction", LEGACY_CROP_FRACTION)) if isinstance(spec, dict) else -1.0
    if not 0.25 <= value <= 1.0:
        raise ValueError(f"registered model: bad preprocess spec {spec!r} (crop_fraction in [0.25, 1])")
    return value


def preprocess(image: ImageLike, resolution: int = 224, crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """Resize, centre crop and normalise one image -> float32 tensor [3, resolution, resolution]."""
    import torch

    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    if not 0.25 <= crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in [0.25, 1], got {crop_fraction}")
    im = to_pil(image)
    short = int(round(resolution / crop_fraction))
    w, h = im.size
    scale = short / min(w, h)
    nw, nh = max(short, int(round(w * scale))), max(short, int(round(h * scale)))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    im = im.crop((left, top, left + resolution, top + resolution))
    a = (np.asarray(im, dtype=np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def preprocess_batch(images: list[ImageLike], resolution: int = 224,
                     crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """Several images -> float32 tensor [N, 3, resolution, resolution]."""
    import torch

    return torch.stack([preprocess(im, resolution, crop_fraction) for im in images])
