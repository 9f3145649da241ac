"""The data owner's commands: ``upload`` (recursive, per-file report), ``ls``, ``delete``."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed (types-tqdm)

from ..errors import TriVaultWarning, UploadInterrupted
from ..recipes import DEFAULT_DIM, DEFAULT_PROJECTION, DEFAULT_RESOLUTION, FITTED
from .common import (
    CONFIG_OPT,
    EXIT_PARTIAL,
    IDENTITY_OPT,
    JSON_OPT,
    console,
    fail,
    first_line,
    make_client,
    note,
    print_json,
    sdk_errors,
    warn,
)
from .upload_files import Candidate, check, deid_summary, mark_duplicates, scan


def build_model(kind: str, resolution: int, dim: int, projection: str = DEFAULT_PROJECTION):
    """See :func:`client.recipes.build_model` (a bad name is a usage error)."""
    from ..recipes import build_model as build

    try:
        return build(kind, resolution, dim, projection)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def ensure_model(c, resolution: int, dim: int, model: str, projection: str, n_images: int) -> None:
    """Register the feature model on first upload (a PCA projection is fitted by the upload itself)."""
    if c.info().get("arch"):
        return
    mod = build_model(model, resolution, dim, projection)
    if (getattr(mod, "recipe", None) or {}).get("projection") in FITTED and n_images > dim:
        note(f"fitting a PCA ({dim}-d) on your {n_images} images and registering the {model} model "
             f"({resolution}x{resolution} -> {dim}-d) as secret shares")
    else:  # too few images for the PCA: the upload warns (TriVaultWarning) and says how to refit
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
    """Regions changed per uploaded image, from the de-identification metadata the upload returned."""
    meta = c.last_upload_stats.get("deid", {})
    for f in found:
        if f.status == "uploaded" and f.image_id in meta:
            f.deid = deid_summary(meta[f.image_id])


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
           resolution: int = typer.Option(DEFAULT_RESOLUTION, help="model input resolution (when registering)"),
           dim: int = typer.Option(DEFAULT_DIM, help="feature dimension (when registering)"),
           projection: str = typer.Option(DEFAULT_PROJECTION, help="efficientnet's projection to DIM (when "
                                          "registering): pca_whiten or pca (fitted on this first upload's images) "
                                          "or random (seeded)"),
           config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Encrypt and upload every image under DIRECTORY (any format Pillow reads; label = path in DIRECTORY).

    Unreadable files are skipped and reported (exit 3); files whose bytes are already uploaded are
    skipped with a note. The id -> file map is printed and kept in the owner's catalog.

    The first upload registers the model. Its projection to DIM is a PCA fitted on this first
    upload's images on your machine (needs more than DIM images; with fewer, a seeded random
    projection is used, with a warning), kept in the owner directory and reused by every later
    upload. To refit it on everything stored (e.g. after a first upload of only a few images):
    `trivault reindex`."""
    if eps is not None and not deid:
        raise typer.BadParameter("--eps only applies with --deid", param_hint="--eps")
    images, others = scan(directory)
    if others:
        note(f"ignored {len(others)} file(s) that are not images (e.g. {others[0].relative_to(directory)})")
    if not images:
        fail(f"no images under {directory}", "any format Pillow reads is accepted (.jpg, .png, .pgm, .tif ...)")
    found = [check(p, directory) for p in tqdm(images, desc="check", unit="file", disable=len(images) < 50)]
    stopped: UploadInterrupted | None = None
    with sdk_errors():
        c = make_client(config)
        with c:
            mark_duplicates(found, {e["sha256"]: i for i, e in catalog_entries(c).items() if e.get("sha256")})
            todo = [f for f in found if f.status == "new"]
            if todo:
                ensure_model(c, resolution, dim, model, projection, len(todo))
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", TriVaultWarning)
                    try:
                        ids = c.upload([f.path for f in todo], labels=[f.name for f in todo], deid=deid,
                                       eps=1.0 if eps is None else eps, collection=collection)
                    except UploadInterrupted as exc:  # the first files are stored: report them, then fail
                        stopped, ids = exc, exc.uploaded
                for w in dict.fromkeys(str(w.message) for w in caught):
                    warn(w)
                for f, i in zip(todo, ids):
                    f.status, f.image_id = "uploaded", int(i)
                for f in todo[len(ids):]:
                    f.status, f.detail = "failed", "the upload stopped before this file (run the same command again)"
                if deid:
                    _deid_reports(c, todo[:len(ids)])
            saved = Path(c.cfg.owner_dir) / "catalog.json"
    _output(found, deid, saved if saved.exists() else None, as_json)
    if stopped is not None:
        fail(first_line(stopped), "run the same command again: stored files are skipped by their content hash")
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


def reindex(projection: str = typer.Option(DEFAULT_PROJECTION, help="pca_whiten or pca"),
            config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Refit the feature projection (PCA) on ALL your stored images and re-upload every feature share.

    Use it when the first upload had too few images to fit the PCA (more than DIM are needed) or
    the collection has changed a lot since. Every image is fetched back and decrypted on this
    machine, the PCA is fitted on their features, and the model and the whole index are
    replaced in one transaction (the encrypted images stay as they are)."""
    with sdk_errors(), make_client(config) as c:
        c.progress = not as_json
        recipe = c.reindex(projection)
        n = len(c.info()["image_ids"])
    if as_json:
        print_json({"recipe": recipe, "n_images": n})
        return
    console.print(f"refitted the {recipe['dim']}-d PCA{' (whitened)' if recipe.get('whiten') else ''} on {n} "
                  "images; model and feature shares replaced")


def register_commands(app: typer.Typer) -> None:
    """Add these commands to ``app``."""
    for fn in (upload, ls, delete, reindex):
        app.command()(fn)
