"""The ``trivault`` command line: certs, up, upload, search, get, delete, demo (and deid)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="TriVault: secure three-party image retrieval.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
DEFAULT_ROOT = Path("trivault-cluster")
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _config(config: Path | None) -> Path:
    p = config or Path(os.environ.get("TRIVAULT_CONFIG", DEFAULT_ROOT / "client-owner.toml"))
    if not p.exists():
        raise typer.BadParameter(f"client config {p} not found: run `trivault up` or pass --config")
    return p


def _client(config: Path | None):
    from .sdk import Client

    return Client(_config(config))


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@app.command()
def certs(out: Path = typer.Option(Path("certs"), "--out", "-o", help="directory for the CA and certificates"),
          client: list[str] = typer.Option(["owner"], "--client", help="client certificate names"),
          dns: list[str] = typer.Option([], "--dns", help="extra DNS names for the server certificates")) -> None:
    """Make a local CA, three server certificates and client certificates."""
    from .certs import make_deployment

    paths = make_deployment(out, tuple(client), tuple(dns))
    console.print(f"CA: {paths.ca}")
    for i in range(3):
        console.print(f"server {i}: {paths.server(i)[0]}")
    for c in client:
        console.print(f"client {c}: {paths.client(c)[0]}")


@app.command()
def up(root: Path = typer.Option(DEFAULT_ROOT, help="cluster directory (certs, configs, data, logs)")) -> None:
    """Start three local servers on 127.0.0.1 and keep them running until Ctrl-C."""
    from .local_cluster import LocalCluster

    lc = LocalCluster(root)
    lc.start()
    console.print(f"three servers up on 127.0.0.1 ports {lc.ports}; client config: {lc.client_config}")
    console.print("press Ctrl-C to stop")
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    try:
        while not stop["flag"] and all(p.poll() is None for p in lc.procs.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        lc.stop()
        console.print("servers stopped")


def _ensure_model(c, resolution: int, dim: int, model: str) -> None:
    if c.info().get("arch"):
        return
    mod = build_model(model, resolution, dim)
    console.print(f"registering the {model} model ({resolution}x{resolution}) as secret shares")
    c.register_model(mod, resolution=resolution)


def build_model(kind: str, resolution: int, dim: int):
    """See :func:`client.recipes.build_model`."""
    from .recipes import build_model as build

    try:
        return build(kind, resolution, dim)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def upload(directory: Path = typer.Argument(..., exists=True, file_okay=False, help="folder of images"),
           config: Path | None = typer.Option(None, "--config", "-c", help="client TOML"),
           deid: bool = typer.Option(False, "--deid", help="also store a de-identified copy"),
           eps: float = typer.Option(1.0, "--eps", help="privacy parameter for --deid"),
           model: str = typer.Option("auto", help="model to register if none: auto, efficientnet, tiny"),
           resolution: int = typer.Option(64, help="model input resolution (when registering)"),
           dim: int = typer.Option(32, help="feature dimension (when registering)")) -> None:
    """Encrypt and upload every image in DIRECTORY (file name = label)."""
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not files:
        _fail(ValueError(f"no images in {directory}"))
    try:
        with _client(config) as c:
            _ensure_model(c, resolution, dim, model)
            ids = c.upload(files, labels=[p.name for p in files], deid=deid, eps=eps)
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    console.print(f"uploaded {len(ids)} images: ids {ids[0]}..{ids[-1]}")


@app.command()
def search(image: Path = typer.Argument(..., exists=True, dir_okay=False, help="query image"),
           k: int = typer.Option(10, "-k", help="number of results"),
           nprobe: int = typer.Option(1, help="index buckets probed (more: better recall, slower)"),
           config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Secure top-k search for IMAGE."""
    try:
        with _client(config) as c:
            r = c.search(image, k=k, nprobe=nprobe)
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    t = Table("rank", "id", "distance")
    for n, (i, d) in enumerate(zip(r.ids, r.distances), 1):
        t.add_row(str(n), str(i), f"{d:.4f}")
    console.print(t)
    console.print(f"{r.seconds:.2f} s end to end, {r.bytes_per_party / 1e6:.2f} MB sent per server")


@app.command()
def get(image_id: int = typer.Argument(..., help="image id"),
        out: Path = typer.Option(..., "--out", "-o", help="output file"),
        deid: bool = typer.Option(False, "--deid", help="fetch the de-identified copy"),
        config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Retrieve and decrypt image ID into FILE."""
    try:
        with _client(config) as c:
            r = c.retrieve(image_id, deid=deid)
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    out.write_bytes(r.data)
    console.print(f"wrote {out} ({len(r.data)} bytes, label {r.label})")


@app.command()
def delete(image_id: int = typer.Argument(..., help="image id"),
           config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Delete image ID (ciphertexts, key shares, index entry) on all three servers."""
    try:
        with _client(config) as c:
            c.delete(image_id)
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    console.print(f"deleted {image_id}")


@app.command()
def demo(root: Path | None = typer.Option(None, help="cluster directory (default: a fresh temporary one)"),
         copies: int = typer.Option(4, help="augmented copies per bundled photo"),
         queries: int = typer.Option(3, help="number of secure queries"),
         model: str = typer.Option("auto", help="auto, efficientnet or tiny"),
         resolution: int = typer.Option(64, help="model input resolution"),
         dim: int = typer.Option(32, help="feature dimension"),
         nprobe: int = typer.Option(2, help="index buckets probed per query")) -> None:
    """Start three local servers, upload bundled photos, run secure queries, retrieve one, stop."""
    from .demo import run_demo

    try:
        run_demo(root, copies, queries, model, resolution, dim, console, nprobe)
    except (ValueError, RuntimeError) as exc:
        _fail(exc)


try:  # the de-identification CLI, when that package is present
    from .deid.cli import app as _deid_app

    app.add_typer(_deid_app, name="deid", help="De-identification tools.")
except ImportError:
    pass


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
