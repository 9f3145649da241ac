"""``trivault deid`` commands: preview (contact sheet), apply (one mechanism), serve (local web page)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .api import MECHANISMS
from .detect import parse_boxes
from .image_io import ImageInputError, load_image, save_image

app = typer.Typer(help="Differentially private de-identification of faces and licence plates.",
                  no_args_is_help=True, add_completion=False)


def _eps_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"--eps must be comma-separated numbers, got {text!r}") from exc
    if not values or any(not v > 0 for v in values):
        raise typer.BadParameter("--eps values must be positive numbers")
    return values


def _load(path: Path):
    try:
        return load_image(path)
    except ImageInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _boxes(text: str | None):
    if text is None:
        return None
    try:
        return parse_boxes(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--boxes") from exc


@app.command()
def preview(
    image: Path = typer.Argument(..., help="Image to preview (JPEG, PNG, GIF, PGM, ...)."),
    eps: str = typer.Option("0.5,1,2,4,8", "--eps", help="Comma-separated epsilons per region to compare."),
    out: Path = typer.Option(Path("deid_preview.png"), "-o", "--out", help="Output PNG contact sheet."),
    mechanism: str = typer.Option("dp_donor", "--mechanism", "-m",
                                  help="DP mechanism: dp_donor (default), dp_latent or dp_pixelize."),
    boxes: str | None = typer.Option(None, "--boxes", help="Regions by hand instead of detection: 'x,y,w,h;...' "
                                     "(append ',plate' to a box for a licence plate)."),
) -> None:
    """Write a contact sheet: the original, each epsilon, and blur/mosaic baselines with SSIM and dHash.

    Smaller epsilon = stronger privacy (more noise). Use it to pick --eps for `apply`.
    """
    if mechanism not in ("dp_latent", "dp_donor", "dp_pixelize"):
        raise typer.BadParameter("preview compares a DP mechanism: dp_latent, dp_donor or dp_pixelize",
                                 param_hint="--mechanism")
    from .contact_sheet import write_contact_sheet

    rows = write_contact_sheet(out, _load(image), _eps_list(eps), mechanism=mechanism, boxes=_boxes(boxes))
    for r in rows:
        tag = r["name"] if r["eps"] is None else f"{r['name']} eps={r['eps']:g}"
        typer.echo(f"{tag:24s} SSIM {r['ssim']:.4f}  dHash {r['dhash']:2d}/64")
    typer.echo(f"wrote {out}")


@app.command()
def apply(
    src: Path = typer.Argument(..., metavar="IN", help="Image to de-identify."),
    dst: Path = typer.Argument(
        ..., metavar="OUT", help="Where to write the de-identified image (format from extension)."
    ),
    eps: float = typer.Option(1.0, "--eps", help="Epsilon per region (image total = sum over regions)."),
    mechanism: str = typer.Option(
        "dp_donor",
        "--mechanism",
        "-m",
        help="dp_donor (default; faces: a public synthetic face chosen by the exponential "
        "mechanism; plates: synthetic), dp_latent (faces: noisy eigenface), dp_pixelize, "
        "blur or mosaic (baselines, no DP guarantee).",
    ),
    boxes: str | None = typer.Option(
        None,
        "--boxes",
        help="Regions by hand instead of detection: 'x,y,w,h;...' (append ',plate' to a box for a licence plate).",
    ),
    metadata: Path | None = typer.Option(None, "--metadata", help="Privacy-accounting JSON (default: OUT.deid.json)."),
) -> None:
    """De-identify IN with one mechanism and write OUT plus its privacy-accounting JSON."""
    if mechanism not in MECHANISMS:
        raise typer.BadParameter(f"choose one of {', '.join(MECHANISMS)}", param_hint="--mechanism")
    if not eps > 0:
        raise typer.BadParameter("must be a positive number", param_hint="--eps")
    from .api import deidentify

    result = deidentify(_load(src), eps, mechanism, boxes=_boxes(boxes))
    try:
        save_image(dst, result.image)
    except ImageInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    meta_path = metadata or dst.with_name(dst.name + ".deid.json")
    meta_path.write_text(json.dumps(result.metadata, indent=2))
    typer.echo(result.metadata["message"])
    if result.metadata["eps_total"] is not None:
        typer.echo(f"privacy: eps per region {eps:g}, image total eps {result.metadata['eps_total']:g}")
    typer.echo(f"wrote {dst} and {meta_path}")


@app.command()
def serve(
    out: Path = typer.Option(Path("deid_approved"), "-o", "--out",
                             help="Folder where approved de-identified images (PNG) and their privacy JSON go."),
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 (0 = any free port)."),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the page in the default browser."),
) -> None:
    """Open a local page (127.0.0.1 only) to drop images, move an eps slider, pick a mechanism,
    see the released image and its metrics, add or remove boxes, and approve.

    Approve writes the approved images to --out (it does not upload: run `trivault upload` on that
    folder). Every preview is a fresh release seen only by you; the approved one's eps is in its JSON.
    Ctrl-C stops the server.
    """
    from .serve import start

    try:
        server, thread = start(out, port)
    except OSError as exc:
        typer.echo(f"error: cannot listen on 127.0.0.1:{port} ({exc}); try --port 0", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"de-identification page: {server.url}  (approved images go to {out}; Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        thread.join()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.shutdown()
        server.server_close()
