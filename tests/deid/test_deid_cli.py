"""CLI: preview writes a valid PNG contact sheet of the expected size; apply writes image + metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from client.deid.cli import app
from client.deid.contact_sheet import sheet_size

runner = CliRunner()


def _astronaut(tmp_path: Path) -> Path:
    p = tmp_path / "astro.png"
    Image.fromarray(data.astronaut()[:256, 64:320]).save(p)
    return p


def test_help_texts() -> None:
    for args in (["--help"], ["preview", "--help"], ["apply", "--help"], ["serve", "--help"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    assert "--eps" in runner.invoke(app, ["apply", "--help"]).output


def test_preview_contact_sheet(tmp_path: Path) -> None:
    src, out = _astronaut(tmp_path), tmp_path / "sheet.png"
    res = runner.invoke(app, ["preview", str(src), "--eps", "0.5,1,2,4,8", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        # original + 5 eps + blur + mosaic = 8 tiles
        assert im.format == "PNG" and im.size == sheet_size((256, 256), 8)
        assert im.size == (4 * 320, 2 * (320 + 54))
    assert "dp_donor eps=0.5" in res.output and "mosaic" in res.output  # dp_donor is the default


def test_apply_writes_image_and_metadata(tmp_path: Path) -> None:
    src, out = _astronaut(tmp_path), tmp_path / "out.png"
    res = runner.invoke(app, ["apply", str(src), str(out), "--eps", "1", "--mechanism", "dp_latent"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "out.png.deid.json").read_text())
    assert meta["eps_per_region"] and meta["eps_total"] == sum(meta["eps_per_region"])
    img = np.asarray(Image.open(out))
    assert img.shape == (256, 256, 3)
    assert (img != np.asarray(Image.open(src))).any()


def test_apply_with_boxes_and_no_detection(tmp_path: Path) -> None:
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((120, 160), 90, np.uint8)).save(flat)
    res = runner.invoke(app, ["apply", str(flat), str(tmp_path / "o.png"), "--eps", "1"])
    assert res.exit_code == 0 and "unchanged" in res.output
    res = runner.invoke(app, ["apply", str(flat), str(tmp_path / "o2.png"), "-m", "mosaic", "--boxes", "10,10,40,40"])
    assert res.exit_code == 0 and "1 region(s) from given boxes" in res.output


def test_bad_input_messages(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_text("nope")
    res = runner.invoke(app, ["apply", str(junk), str(tmp_path / "o.png")])
    assert res.exit_code == 2 and "not a readable image" in res.output
    src = _astronaut(tmp_path)
    res = runner.invoke(app, ["apply", str(src), str(tmp_path / "o.png"), "--mechanism", "swirl"])
    assert res.exit_code == 2 and "dp_latent" in res.output
    res = runner.invoke(app, ["apply", str(src), str(tmp_path / "o.png"), "--boxes", "1,2,3"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["preview", str(src), "--eps", "1,zero"])
    assert res.exit_code == 2
