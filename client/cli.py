"""The ``trivault`` command line: certs, up, upload, search, get, delete, demo (and deid); keys, register,
grant, revoke, audit, trace (access control)."""

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


def _client(config: Path | None, identity: Path | None = None):
    """SDK client; the user's keys come from --identity, $TRIVAULT_IDENTITY or owner_dir/identity."""
    from .sdk import Client

    ident = identity or (Path(os.environ["TRIVAULT_IDENTITY"]) if os.environ.get("TRIVAULT_IDENTITY") else None)
    pw = os.environ.get("TRIVAULT_PASSPHRASE")
    return Client(_config(config), identity=ident, passphrase=pw.encode() if pw else None)


IDENTITY_OPT = typer.Option(None, "--identity", "-i", help="identity directory (default: $TRIVAULT_IDENTITY or "
                                                          "owner_dir/identity)")


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
           collection: str = typer.Option("default", "--collection", help="collection to search"),
           purpose: str | None = typer.Option(None, "--purpose", help="purpose declared to the policy"),
           identity: Path | None = IDENTITY_OPT,
           config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Secure top-k search for IMAGE (results you may not see are dropped on the servers' shares)."""
    try:
        with _client(config, identity) as c:
            r = c.search(image, k=k, nprobe=nprobe, collection=collection, purpose=purpose)
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
        purpose: str | None = typer.Option(None, "--purpose", help="purpose declared to the policy"),
        watermark: bool | None = typer.Option(None, "--watermark/--no-watermark",
                                              help="embed a mark naming you (default: unless you are the owner)"),
        identity: Path | None = IDENTITY_OPT,
        config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Retrieve, decrypt and verify image ID into FILE (the policy decides which copy)."""
    try:
        with _client(config, identity) as c:
            r = c.retrieve(image_id, deid=deid, purpose=purpose)
            mark = watermark if watermark is not None else c.owner_identity().user_id != c.identity.user_id
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    if mark:
        from .watermark import save_rgb

        save_rgb(out, r.marked())
    else:
        out.write_bytes(r.data)
    console.print(f"wrote {out} ({r.kind} copy, label {r.label}, owner signature "
                  f"{'verified' if r.verified else 'absent'}{', watermarked' if mark else ''})")


keys_app = typer.Typer(help="User identities (Ed25519 signing + X25519 key delivery).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(out: Path = typer.Option(Path("trivault-identity"), "--out", "-o", help="directory for the key files"),
             role: str | None = typer.Option(None, "--role", help="claimed role (the owner attests it)"),
             org: str | None = typer.Option(None, "--org", help="claimed organisation"),
             passphrase: bool = typer.Option(False, "--passphrase", help="encrypt the private keys (prompted)")) -> None:
    """Create an identity; register its identity.json with the owner (`trivault register`)."""
    from .identity import Identity

    attrs = {k: v for k, v in (("role", role), ("organisation", org)) if v}
    pw = typer.prompt("passphrase", hide_input=True, confirmation_prompt=True).encode() if passphrase else None
    try:
        Identity.create(attrs).save(out, pw)
    except (ValueError, OSError) as exc:
        _fail(exc)
    from wire.identity import PublicIdentity

    pub = PublicIdentity.from_json((out / "identity.json").read_text())
    console.print(f"user id {pub.user_id}; public bundle {out / 'identity.json'} (private keys mode 0600)")


@app.command()
def bootstrap(identity: Path | None = IDENTITY_OPT,
              config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """First use of servers started without owner_identity: make your identity their owner."""
    try:
        with _client(config, identity) as c:
            uid = c.bootstrap()
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    console.print(f"owner of this deployment: {uid}")


@app.command()
def register(bundle: Path = typer.Argument(..., exists=True, dir_okay=False, help="a user's identity.json"),
             attr: list[str] = typer.Option([], "--attr", help="attested attribute key=value (repeatable)"),
             identity: Path | None = IDENTITY_OPT,
             config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Owner: register a user with the attributes you attest (their own claims are not used)."""
    from wire.identity import PublicIdentity

    try:
        attrs = dict(a.split("=", 1) for a in attr)
        with _client(config, identity) as c:
            uid = c.register_user(PublicIdentity.from_json(bundle.read_text()), attrs)
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    console.print(f"registered {uid} {attrs}")


def _expires(text: str | None) -> float | None:
    if not text:
        return None
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1] in unit and text[:-1].isdigit():
        return time.time() + int(text[:-1]) * unit[text[-1]]
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


@app.command()
def grant(user: str = typer.Argument(..., help="user id"),
          collection: str = typer.Argument("default", help="collection"),
          outcome: str = typer.Option("ORIGINAL", "--outcome", help="ORIGINAL | DEIDENTIFIED | NOTHING"),
          expires: str | None = typer.Option(None, "--expires", help="e.g. 30m, 7d, or an ISO date"),
          purpose: list[str] = typer.Option([], "--purpose", help="allowed purpose (repeatable; default any)"),
          image: int | None = typer.Option(None, "--image", help="only this image"),
          identity: Path | None = IDENTITY_OPT,
          config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Owner: grant USER access to COLLECTION (signed; applied by each server)."""
    try:
        with _client(config, identity) as c:
            c.grant(user, collection, outcome, _expires(expires), purpose or None, image)
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    console.print(f"granted {outcome.upper()} on {collection} to {user}")


@app.command()
def revoke(user: str = typer.Argument(..., help="user id"),
           collection: str = typer.Argument("default", help="collection"),
           image: int | None = typer.Option(None, "--image", help="only this image"),
           identity: Path | None = IDENTITY_OPT,
           config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Owner: revoke USER on COLLECTION; effective at the next key release on every server."""
    try:
        with _client(config, identity) as c:
            c.revoke(user, collection, image)
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    console.print(f"revoked {user} on {collection}")


@app.command()
def audit(identity: Path | None = IDENTITY_OPT,
          config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Verify the three servers' hash-chained audit logs against each other; show your entries."""
    from wire.audit import compare_chains

    try:
        with _client(config, identity) as c:
            exports = c.audit_exports()
            me = c.identity.user_id
    except (ValueError, RuntimeError) as exc:
        _fail(exc)
    div = compare_chains(exports)
    t = Table("seq", "time", "event", "actor", "subject", "detail")
    mine = [e for e in exports[min(exports)] if me in (e["actor"], e["subject"])] if exports else []
    for e in mine[-50:]:
        t.add_row(str(e["seq"]), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts_ms"] / 1000)), e["event"],
                  e["actor"][:12], str(e["subject"])[:24], str(e["detail"])[:60])
    console.print(t)
    console.print(f"servers answering: {sorted(exports)}")
    if div.ok and len(exports) == 3:
        console.print(f"[green]audit OK[/green]: {div.summary()}")
        return
    console.print(f"[red]audit divergence[/red] (suspects {div.suspects()}):\n{div.summary()}")
    raise typer.Exit(1)


@app.command()
def trace(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a leaked image file")) -> None:
    """Read the recipient id watermarked into a retrieved image (survives JPEG q75 and resizing)."""
    from .watermark import trace as read_mark

    uid = read_mark(file)
    if uid is None:
        console.print("no TriVault watermark found")
        raise typer.Exit(1)
    console.print(f"delivered to user {uid}")


@app.command()
def delete(image_id: int = typer.Argument(..., help="image id"),
           identity: Path | None = IDENTITY_OPT,
           config: Path | None = typer.Option(None, "--config", "-c", help="client TOML")) -> None:
    """Delete image ID (ciphertexts, key shares, index entry, policy rows) on all three servers (signed)."""
    try:
        with _client(config, identity) as c:
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
