"""The querier's commands: ``search`` (secure top-k, names, ``--json``) and ``get`` (retrieve)."""

from __future__ import annotations

import io
from pathlib import Path

import typer
from rich.table import Table

from ..recipes import DEFAULT_NPROBE
from .common import (
    CONFIG_OPT,
    IDENTITY_OPT,
    JSON_OPT,
    console,
    fail,
    make_client,
    note,
    print_json,
    sdk_errors,
)

K_HINT = ("-k may exceed the images in the probed index buckets: use a smaller -k or a larger --nprobe "
          "(`trivault ls` counts your images)")
PURPOSE_OPT = typer.Option(None, "--purpose", help="purpose declared to the policy (must be one the grant lists)")


def _names(c) -> dict[int, str]:
    from .owner_cmds import catalog_entries

    try:
        return {i: e.get("name") or "" for i, e in catalog_entries(c).items()}
    except (OSError, ValueError):
        return {}


def run_search(c, image: Path, k: int, nprobe: int, collection: str, purpose: str | None):
    """One query's (ids, distances, names, note, seconds, bytes per server); the SDK's warnings
    (k above the candidates ...) become the note."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if hasattr(c, "search_results"):  # SDK with batch search and labels
            r = c.search_results(image, k=k, nprobe=nprobe, collection=collection, purpose=purpose)[0]
        else:
            r = c.search(image, k=k, nprobe=nprobe, collection=collection, purpose=purpose)
    names = _names(c)
    labels = getattr(r, "labels", None) or [None] * len(r.ids)
    notes = [getattr(r, "note", None)] + [str(w.message) for w in caught]
    note_text = "; ".join(dict.fromkeys(n for n in notes if n)) or None
    return r, [lb or names.get(i, "") for i, lb in zip(r.ids, labels)], note_text


def search(image: Path = typer.Argument(..., exists=True, dir_okay=False, help="query image"),
           k: int = typer.Option(10, "-k", min=1, help="number of results"),
           nprobe: int = typer.Option(DEFAULT_NPROBE, min=1, help="index buckets probed (more: better recall, "
                                      "slower; capped at the index's buckets)"),
           collection: str = typer.Option("default", "--collection", help="collection to search"),
           purpose: str | None = PURPOSE_OPT, identity: Path | None = IDENTITY_OPT,
           config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Secure top-k search for IMAGE (results you may not see are dropped on the servers' shares)."""
    with sdk_errors(("INTERNAL", K_HINT), ("k=", K_HINT)), make_client(config, identity) as c:
        r, names, why = run_search(c, image, k, nprobe, collection, purpose)
    rows = [{"rank": n, "id": i, "name": name, "distance": d}
            for n, (i, d, name) in enumerate(zip(r.ids, r.distances, names), 1)]
    if why:
        note(why)
    elif len(rows) < k:
        note(f"{len(rows)} result(s) for -k {k}: only these images are in the probed buckets and visible to you")
    if as_json:
        print_json({"results": rows, "note": why, "seconds": r.seconds, "bytes_per_server": r.bytes_per_party})
        return
    t = Table("rank", "id", "name", "distance")
    for row in rows:
        t.add_row(str(row["rank"]), str(row["id"]), row["name"] or "-", f"{row['distance']:.4f}")
    console.print(t)
    console.print(f"{r.seconds:.2f} s end to end, {r.bytes_per_party / 1e6:.2f} MB sent per server")


def real_suffix(data: bytes) -> str | None:
    """The file extension matching the image bytes' format (``.jpg`` for JPEG), None if unknown."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except OSError:
        return None
    return {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "PPM": ".pgm" if data[:2] == b"P5" else ".ppm"}.get(
        fmt or "", f".{fmt.lower()}" if fmt else None)


def output_path(out: Path, data: bytes | None) -> Path:
    """``out`` with its folder created; for file bytes in another format, the real extension."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create folder {out.parent}: {exc.strerror}", "choose another --out")
    if data is not None:
        sfx = real_suffix(data)
        same = {sfx, ".jpeg" if sfx == ".jpg" else sfx, ".tiff" if sfx == ".tif" else sfx}
        if sfx and out.suffix.lower() not in same:
            note(f"the image is {sfx[1:].upper()}: writing {out.with_suffix(sfx).name} instead of {out.name}")
            return out.with_suffix(sfx)
    return out


def get(image_id: int = typer.Argument(..., help="image id"),
        out: Path = typer.Option(..., "--out", "-o", help="output file (folder created; the extension follows "
                                                          "the stored format)"),
        deid: bool = typer.Option(False, "--deid", help="fetch the de-identified copy"),
        purpose: str | None = PURPOSE_OPT,
        identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Retrieve image ID into a file (the policy decides which copy). The owner gets the uploaded
    file, decrypted and verified; anyone else a PNG the servers marked for them (``trivault trace``)."""
    with sdk_errors(("unknown image id", "`trivault ls` lists the image ids")):
        with make_client(config, identity) as c:
            r = c.retrieve(image_id, deid=deid, purpose=purpose)
        path = output_path(out, r.data)
        path.write_bytes(r.data)
    info = {"id": image_id, "file": str(path), "copy": r.kind, "label": r.label, "verified": r.verified,
            "watermarked": r.watermarked, "servers_not_used": {str(i): why for i, why in r.unused.items()}}
    if as_json:
        print_json(info)
        return
    what = "watermarked for you by the servers" if r.watermarked else \
        f"owner signature {'verified' if r.verified else 'absent'}"
    console.print(f"wrote {path} ({r.kind} copy, label {r.label}, {what})")
    for i, why in sorted(r.unused.items()):
        note(f"server {i} not used ({why}): this copy rests on the two other servers, without the "
             "third holder's cross-check")


def register_commands(app: typer.Typer) -> None:
    """Add these commands to ``app``."""
    for fn in (search, get):
        app.command()(fn)
