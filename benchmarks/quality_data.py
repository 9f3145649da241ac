"""Copy-detection data for ``benchmarks.quality``, in the manner of INRIA Copydays, built offline.

Database: every real photo available offline, each once (content-hashed):
* scikit-image sample photos that load without a download (synthetic drawings such as
  ``logo``, ``checkerboard``, ``binary_blobs``, ``horse``, ``colorwheel`` and the phantom
  are left out; ``cat`` is the same picture as ``chelsea``);
* scikit-learn ``load_sample_images`` (china, flower);
* when present, ``../shared/data/deid`` ``scenes/`` and ``faces/`` (all image files).

Queries: transformed copies of the originals. Original ``i`` gets ``per_image`` of the
:data:`TRANSFORMS` (``(i * per_image + j) mod len(TRANSFORMS)``, so every transform is
used about equally often); each transform draws its random parameters from
``numpy.random.default_rng([seed, i, t])``, so the set is the same on every run.
Ground truth: the query's original; every other original is a distractor.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "cat", "cell", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "rocket", "text",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".pgm", ".bmp", ".tif", ".tiff"}
MAX_SIDE = 1024  # originals larger than this are downscaled once (all transforms start from it)


@dataclass(frozen=True)
class Original:
    name: str
    image: Image.Image


@dataclass(frozen=True)
class Query:
    source: int  # index of the original
    transform: str
    group: str


def _fit(im: Image.Image) -> Image.Image:
    im = im.convert("RGB")
    if max(im.size) > MAX_SIDE:
        s = MAX_SIDE / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC)
    return im


def _from_array(a: np.ndarray) -> Image.Image:
    from client.preprocess import to_pil

    return to_pil(a)


def load_originals(shared_dir: Path | None) -> list[Original]:
    """The database photos (see the module docstring), deduplicated by pixel content."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    found: list[Original] = []
    for name in SKIMAGE_PHOTOS:
        try:
            arr = getattr(data, name)()
        except Exception:  # noqa: BLE001 - this sample needs a download here: skip it
            continue
        found.append(Original(f"skimage/{name}", _fit(_from_array(arr))))
    sk = load_sample_images()
    for fname, arr in zip(sk.filenames, sk.images):
        found.append(Original(f"sklearn/{Path(fname).name}", _fit(_from_array(arr))))
    if shared_dir is not None and shared_dir.is_dir():
        for sub in ("scenes", "faces"):
            for p in sorted((shared_dir / sub).rglob("*")):
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                    with Image.open(p) as im:
                        found.append(Original(f"deid/{p.relative_to(shared_dir)}", _fit(im)))
    seen: set[str] = set()
    out = []
    for o in found:
        h = hashlib.sha256(o.image.tobytes() + repr(o.image.size).encode()).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(o)
    return out


def person_labels(originals: list[Original]) -> list[str]:
    """The person shown by each original: its folder under ``deid/faces/`` (``faces/<identity>/<n>.<ext>``,
    see ``../shared/data/deid/SOURCES.md``), ``""`` for every other photo."""
    out = []
    for o in originals:
        parts = o.name.split("/")
        out.append(parts[2] if len(parts) > 3 and parts[:2] == ["deid", "faces"] else "")
    return out


# ---- transforms ---------------------------------------------------------------------------

Rng = np.random.Generator
TransformFn = Callable[[Image.Image, Rng], Image.Image]


def _crop(frac_area: float) -> TransformFn:
    def f(im: Image.Image, rng: Rng) -> Image.Image:
        s = frac_area ** 0.5
        w, h = max(8, round(im.width * s)), max(8, round(im.height * s))
        x, y = int(rng.integers(0, im.width - w + 1)), int(rng.integers(0, im.height - h + 1))
        return im.crop((x, y, x + w, y + h))
    return f


def _rotate(deg: float) -> TransformFn:
    def f(im: Image.Image, rng: Rng) -> Image.Image:
        sign = 1 if rng.random() < 0.5 else -1
        return im.rotate(sign * deg, resample=Image.BICUBIC, expand=deg % 90 == 0)
    return f


def _scale(factor: float) -> TransformFn:
    return lambda im, rng: im.resize((max(8, round(im.width * factor)), max(8, round(im.height * factor))),
                                     Image.BICUBIC)


def _stretch(im: Image.Image, rng: Rng) -> Image.Image:
    return im.resize((max(8, round(im.width * 1.5)), im.height), Image.BICUBIC)


def _jpeg(quality: int) -> TransformFn:
    def f(im: Image.Image, rng: Rng) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as out:
            return out.convert("RGB")
    return f


def _enhance(kind: type, factor: float) -> TransformFn:
    return lambda im, rng: kind(im).enhance(factor)


def _gray(im: Image.Image, rng: Rng) -> Image.Image:
    return ImageOps.grayscale(im).convert("RGB")


def _hue(im: Image.Image, rng: Rng) -> Image.Image:
    h, s, v = im.convert("HSV").split()
    h = h.point(lambda p: (p + 80) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def _gamma(im: Image.Image, rng: Rng) -> Image.Image:
    return im.point(lambda p: round(255 * (p / 255) ** 2.0))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _text(im: Image.Image, rng: Rng) -> Image.Image:
    out = im.copy()
    d = ImageDraw.Draw(out)
    size = max(8, im.height // 8)
    for _ in range(2):
        y = int(rng.integers(0, max(1, im.height - size)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        d.text((int(rng.integers(0, max(1, im.width // 3))), y), f"COPY {int(rng.integers(1000, 9999))} (c) 2026",
               fill=colour, font=_font(size), stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return out


def _patches(im: Image.Image, rng: Rng) -> Image.Image:
    out = im.copy()
    d = ImageDraw.Draw(out)
    for _ in range(4):  # four boxes of 1/4 x 1/4 of the image: up to 25% covered
        w, h = im.width // 4, im.height // 4
        x, y = int(rng.integers(0, im.width - w + 1)), int(rng.integers(0, im.height - h + 1))
        d.rectangle((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return out


def _logo(im: Image.Image, rng: Rng) -> Image.Image:
    from skimage import data

    logo = Image.fromarray(data.logo()).convert("RGBA")
    side = max(8, min(im.size) // 2)
    logo = logo.resize((side, side), Image.BICUBIC)
    out = im.copy()
    x, y = int(rng.integers(0, im.width - side + 1)), int(rng.integers(0, im.height - side + 1))
    out.paste(logo, (x, y), logo)
    return out


def _frame(im: Image.Image, rng: Rng) -> Image.Image:
    b = max(2, min(im.size) // 7)
    return ImageOps.expand(im, border=b, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))


def _flip(im: Image.Image, rng: Rng) -> Image.Image:
    return ImageOps.mirror(im)


def _chain(*fns: TransformFn) -> TransformFn:
    def f(im: Image.Image, rng: Rng) -> Image.Image:
        for fn in fns:
            im = fn(im, rng)
        return im
    return f


TRANSFORMS: list[tuple[str, str, TransformFn]] = [
    ("crop80", "crop", _crop(0.8)), ("crop50", "crop", _crop(0.5)), ("crop25", "crop", _crop(0.25)),
    ("crop10", "crop", _crop(0.1)),
    ("rot5", "rotate", _rotate(5)), ("rot15", "rotate", _rotate(15)), ("rot90", "rotate", _rotate(90)),
    ("scale50", "scale", _scale(0.5)), ("scale20", "scale", _scale(0.2)), ("stretch150", "scale", _stretch),
    ("jpeg75", "jpeg", _jpeg(75)), ("jpeg30", "jpeg", _jpeg(30)), ("jpeg10", "jpeg", _jpeg(10)),
    ("jpeg5", "jpeg", _jpeg(5)),
    ("bright150", "colour", _enhance(ImageEnhance.Brightness, 1.5)),
    ("contrast50", "colour", _enhance(ImageEnhance.Contrast, 0.5)), ("gray", "colour", _gray),
    ("hue", "colour", _hue), ("gamma2", "colour", _gamma),
    ("text", "overlay", _text), ("patches25", "overlay", _patches), ("logo", "overlay", _logo),
    ("frame", "overlay", _frame),
    ("flip", "flip", _flip),
    ("crop50+rot5+jpeg30+bright", "strong", _chain(_crop(0.5), _rotate(5), _jpeg(30),
                                                   _enhance(ImageEnhance.Brightness, 1.3))),
    ("crop25+text+gray+jpeg10", "strong", _chain(_crop(0.25), _text, _gray, _jpeg(10))),
]


def make_queries(n_originals: int, per_image: int) -> list[Query]:
    """The query list: ``per_image`` transforms of every original (see the module docstring)."""
    if not 1 <= per_image <= len(TRANSFORMS):
        raise ValueError(f"per_image must be in [1, {len(TRANSFORMS)}], got {per_image}")
    out = []
    for i in range(n_originals):
        for j in range(per_image):
            name, group, _ = TRANSFORMS[(i * per_image + j) % len(TRANSFORMS)]
            out.append(Query(i, name, group))
    return out


_BY_NAME = {name: (k, fn) for k, (name, _, fn) in enumerate(TRANSFORMS)}


def render_query(q: Query, originals: list[Original], seed: int) -> Image.Image:
    """The transformed copy (deterministic in ``seed``, the original and the transform)."""
    k, fn = _BY_NAME[q.transform]
    return fn(originals[q.source].image, np.random.default_rng([seed, q.source, k]))
