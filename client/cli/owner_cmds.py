"""The data owner's commands: ``upload`` (recursive, per-file report), ``ls``, ``delete``."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from .common import (
    CONFIG_OPT,
    EXIT_PARTIAL,
    IDENTITY_OPT,
    JSON_OPT,
    console,
    fail,
    make_client,
    note,
    print_json,
    sdk_errors,
    warn,
)
from .upload_files import Candidate, check, deid_summary, mark_duplicates, scan


def build_model(kind: str, resolution: int, dim: int):
    """See :func:`client.recipes.build_model` (a bad name is a usage error)."""
    from ..recipes import build_model as build

    try:
        return build(kind, resolution, dim)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def ensure_model(c, resolution: int, dim: int, model: str) -> None:
    """Register the feature model on first upload."""
    if c.info().get("arch"):
        return
    mod = build_model(model, resolution, dim)
    note(f"registering the {model} model ({resolution}x{resolution} -> {dim}-d) as secret shares")
    c.register_model(mod, resolution=resolution)


def catalog_entries(c) -> dict[int, dict]:
    """The owner's images by id as dicts (id, name, collection, size, sha256): ``Client.ls()`` when the
    SDK has it, else the owner's local catalog / state."""
    if hasattr(c, "ls"):
        return {int(e.id): asdict(e) for e in c.ls()}
    ids = c.owner.load_features()[1].tolist()
    try:
        from ..catalog import Catalog

        known = {i: asdict(e) for i, e in Catalog(c.cfg.owner_dir).entries().items()}
    except ImportError:
        known = {}
    return {int(i): known.get(int(i), {"id": int(i), "name": None, "collection": None, "size": None})
            for i in ids}


def _deid_reports(c, found: list[Candidate]) -> None:
    """Regions changed per uploaded image, from the accounting ``client.deid`` stored inside each
    de-identified copy (fetched back and verified like any retrieval)."""
    from PIL import Image

    from ..encryption import DEID_METADATA_KEY

    for f in found:
        if f.status != "uploaded":
            continue
        r = c.retrieve(f.image_id, deid=True)
        with Image.open(io.BytesIO(r.data)) as im:
            f.deid = deid_summary(json.loads(im.text.get(DEID_METADATA_KEY, "{}")))


def _report(found: list[Candidate], deid: bool, saved: Path | None) -> None:
    cols = ["id", "file", "status"] + (["faces", "plates"] if deid else [])
    t = Table(*cols, title="upload")
    for f in found:
        row = [str(f.image_id) if f.image_id is not None else "-", f.name,
               f.status + (f": {f.detail}" if f.detail else "")]
        if deid:
            row += [str(f.deid.get("faces", "-")), str(f.deid.get("plates", "-"))] if f.deid else ["-", "-"]
        t.add_row(*row)
    console.print(t)
    for f in found:
        if f.deid.get("unchanged"):
            warn(f"{f.name}: no faces or plates found; its de-identified copy is the original unchanged")
    up = [f.image_id for f in found if f.image_id is not None]
    if up:
        console.print(f"uploaded {len(up)} images: ids {up[0]}..{up[-1]}"
                      + (f"; id -> file map saved in {saved}" if saved else ""))


def upload(directory: Path = typer.Argument(..., exists=True, file_okay=False, help="folder of images (recursive)"),
           collection: str = typer.Option("default", "--collection", help="collection to add the images to"),
           deid: bool = typer.Option(False, "--deid", help="also store a de-identified copy (faces, plates)"),
           eps: float | None = typer.Option(None, "--eps", help="privacy parameter per region for --deid "
                                                                "(default 1)"),
           model: str = typer.Option("auto", help="model to register if none: auto, efficientnet, tiny"),
           resolution: int = typer.Option(64, help="model input resolution (when registering)"),
           dim: int = typer.Option(32, help="feature dimension (when registering)"),
           config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Encrypt and upload every image under DIRECTORY (any format Pillow reads; label = path in DIRECTORY).

    Unreadable files are skipped and reported (exit 3); files whose bytes are already uploaded are
    skipped with a note. The id -> file map is printed and kept in the owner's catalog."""
    if eps is not None and not deid:
        raise typer.BadParameter("--eps only applies with --deid", param_hint="--eps")
    images, others = scan(directory)
    if others:
        note(f"ignored {len(others)} file(s) that are not images (e.g. {others[0].relative_to(directory)})")
    if not images:
        fail(f"no images under {directory}", "any format Pillow reads is accepted (.jpg, .png, .pgm, .tif ...)")
    found = [check(p, directory) for p in images]
    with sdk_errors():
        c = make_client(config)
        with c:
            mark_duplicates(found, {e["sha256"]: i for i, e in catalog_entries(c).items() if e.get("sha256")})
            todo = [f for f in found if f.status == "new"]
            if todo:
                ensure_model(c, resolution, dim, model)
                ids = c.upload([f.path for f in todo], labels=[f.name for f in todo], deid=deid,
                               eps=1.0 if eps is None else eps, collection=collection)
                for f, i in zip(todo, ids):
                    f.status, f.image_id = "uploaded", int(i)
                if deid:
                    _deid_reports(c, todo)
            saved = Path(c.cfg.owner_dir) / "catalog.json"
    _output(found, deid, saved if saved.exists() else None, as_json)
    if any(f.status == "failed" for f in found):
        raise typer.Exit(EXIT_PARTIAL)


def _output(found: list[Candidate], deid: bool, saved: Path | None, as_json: bool) -> None:
    if as_json:
        print_json({"files": [{"file": str(f.path), "name": f.name, "id": f.image_id, "status": f.status,
                               "detail": f.detail, "size": f.size, "sha256": f.sha256,
                               **({"deid": f.deid} if deid else {})} for f in found],
                    "map": str(saved) if saved else None})
    else:
        _report(found, deid, saved)
    bad = [f for f in found if f.status == "failed"]
    if bad:
        warn(f"{len(bad)} file(s) not uploaded: " + "; ".join(f"{f.name}: {f.detail}" for f in bad[:5]))


def ls(config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """The owner's images: id, name, collection, size (from the owner's local catalog)."""
    with sdk_errors(), make_client(config) as c:
        entries = catalog_entries(c)
    rows = [{k: e.get(k) for k in ("id", "name", "collection", "size")} for _, e in sorted(entries.items())]
    if as_json:
        print_json(rows)
        return
    t = Table("id", "name", "collection", "size")
    for r in rows:
        t.add_row(str(r["id"]), str(r["name"] or "?"), str(r["collection"] or "?"),
                  "?" if r["size"] is None else f"{r['size']:,} B")
    console.print(t)
    console.print(f"{len(rows)} images")


def delete(image_id: int = typer.Argument(..., help="image id"),
           identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT) -> None:
    """Delete image ID (ciphertexts, key shares, index entry, policy rows) on all three servers (signed)."""
    with sdk_errors(("unknown image id", "`trivault ls` lists your image ids")), make_client(config, identity) as c:
        c.delete(image_id)
    console.print(f"deleted {image_id}")


def register_commands(app: typer.Typer) -> None:
    """Add these commands to ``app``."""
    for fn in (upload, ls, delete):
        app.command()(fn)
