"""``trivault rekey``: re-key images after a revocation (``client.rekey``)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import CONFIG_OPT, IDENTITY_OPT, JSON_OPT, console, make_client, print_json, sdk_errors


def rekey(image: list[int] | None = typer.Argument(None, help="image ids (default: those waiting since a revoke)"),
          identity: Path | None = IDENTITY_OPT, config: Path | None = CONFIG_OPT, as_json: bool = JSON_OPT) -> None:
    """Owner: give images new keys, ciphertexts and pixel shares, so key or pixel shares a revoked
    user kept open nothing stored. `revoke` queues the images it covers; they are re-keyed at your
    next upload, delete or grant, or now by this command."""
    with sdk_errors(), make_client(config, identity) as c:
        c.progress = not as_json
        done = c.rekey(image or None)
    if as_json:
        print_json({"rekeyed": done})
    else:
        console.print(f"re-keyed {len(done)} image(s){': ' + ', '.join(map(str, done)) if done else ''}")


def register_commands(app: typer.Typer) -> None:
    """Add ``rekey`` to ``app``."""
    app.command()(rekey)
