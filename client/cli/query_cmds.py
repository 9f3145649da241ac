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


#: Queries per secure session of a multi-image search. Each server holds every query's CNN
#: activations at once: measured 2026-12-03 (96 px model), 30 queries in one session peaked at
#: 3.0 GB per server process (1.7 s per query on one machine), so the servers' limit of 64
#: (``client.search.MAX_QUERIES``) could need ~6 GB on each of three servers; 16 keep ~1.6 GB and
#: still share the rounds (223 per session: 0.07 s per query at 10 ms RTT).
QUERIES_PER_SESSION = 16


def run_searches(c, images: list[Path], k: int, nprobe: int, collection: str, purpose: str | None):
    """Per query: (result, names, note, session number), the queries run
    :data:`QUERIES_PER_SESSION` per secure session; the SDK's warnings of a session (k above the
    candidates ...) become the note."""
    import warnings

    names = _names(c)
    out = []
    for s in range(0, len(images), QUERIES_PER_SESSION):
        chunk = images[s:s + QUERIES_PER_SESSION]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if hasattr(c, "search_results"):  # SDK with batch search and labels
                results = c.search_results(chunk, k=k, nprobe=nprobe, collection=collection, purpose=purpose)
            else:
                results = [c.search(q, k=k, nprobe=nprobe, collection=collection, purpose=purpose) for q in chunk]
        warned = [str(w.message) for w in caught]
        for r in results:
            labels = getattr(r, "labels", None) or [None] * len(r.ids)
            note_text = "; ".join(dict.fromkeys(n for n in [getattr(r, "note", None), *warned] if n)) or None
            out.append((r, [lb or names.get(i, "") for i, lb in zip(r.ids, labels)], note_text,
                        s // QUERIES_PER_SESSION))
    return out


def query_files(paths: list[Path]) -> list[Path]:
    """The query images: files as given, folders scanned for images (recursively, sorted)."""
    from .upload_files import scan

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found, _ = scan(p)
            if not found:
                fail(f"no images under {p}", "any format Pillow reads is accepted (.jpg, .png, .pgm, .tif ...)")
            out += found
        else:
            out.append(p)
    return out


def search(images: list[Path] = typer.Argument(..., exists=True, help="query image(s), or folders of them",
                                               metavar="IMAGE..."),
           k: int = typer.Option(10, "-k", min=1, help="number of results"),
           nprobe: int = typer.Option(DEFAULT_NPROBE, min=1, help="index buckets probed (more: better recall, "
                                      "slower; capped at the index's buckets)"),
           collection: str = typer.Option("default", "--collection", help="collection to search"),
           purpose: str | None = PURPOSE_OPT, identity: Path | None = IDENTITY_OPT,
           config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Secure top-k search for each IMAGE (results you may not see are dropped on the servers'
    shares). Several images or a folder run 16 queries per secure session, which shares the
    session's rounds: much faster per query than one command per image."""
    queries = query_files(images)
    with sdk_errors(("INTERNAL", K_HINT), ("k=", K_HINT)), make_client(config, identity) as c:
        found = run_searches(c, queries, k, nprobe, collection, purpose)
    answers = []
    seconds_of = {n: r.seconds for r, _, _, n in found}  # a session's results share its time
    for q, (r, names, why, _) in zip(queries, found):
        rows = [{"rank": n, "id": i, "name": name, "distance": d}
                for n, (i, d, name) in enumerate(zip(r.ids, r.distances, names), 1)]
        short = None if why or len(rows) >= k else \
            f"{len(rows)} result(s) for -k {k}: only these images are in the probed buckets and visible to you"
        answers.append((q, r, rows, why or short))
    if as_json:
        for q, _, _, why in answers:  # notes go to stderr, the JSON alone to stdout
            if why:
                note(why if len(answers) == 1 else f"{q}: {why}")
        if len(answers) == 1:
            _, r, rows, why = answers[0]
            print_json({"results": rows, "note": why, "seconds": r.seconds, "bytes_per_server": r.bytes_per_party})
        else:
            print_json({"queries": [{"query": str(q), "results": rows, "note": why, "seconds": r.seconds,
                                     "bytes_per_server": r.bytes_per_party} for q, r, rows, why in answers]})
        return
    for q, r, rows, why in answers:
        if len(answers) > 1:
            console.print(f"query {q}")
        if why:
            note(why)
        t = Table("rank", "id", "name", "distance")
        for row in rows:
            t.add_row(str(row["rank"]), str(row["id"]), row["name"] or "-", f"{row['distance']:.4f}")
        console.print(t)
        if len(answers) == 1:
            console.print(f"{r.seconds:.2f} s end to end, {r.bytes_per_party / 1e6:.2f} MB sent per server")
    if len(answers) > 1:
        seconds = sum(seconds_of.values())
        console.print(f"{len(answers)} queries in {len(seconds_of)} secure session(s): {seconds:.2f} s end to "
                      f"end, {seconds / len(answers):.2f} s per query")


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
