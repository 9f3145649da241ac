"""The ``trivault`` Typer app: every command group registered, exit codes in the epilog."""

from __future__ import annotations

import sys

import typer

from . import acl_cmds, cluster_cmds, owner_cmds, query_cmds, rekey_cmds
from .common import EPILOG

app = typer.Typer(help="TriVault: secure three-party image retrieval.", epilog=EPILOG, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
cluster_cmds.register_commands(app)
owner_cmds.register_commands(app)
query_cmds.register_commands(app)
acl_cmds.register_commands(app)
rekey_cmds.register_commands(app)



def add_deid(argv: list[str]) -> None:
    """Add ``trivault deid`` (client.deid's CLI, 4 s of imports) only when the command line can
    need it: ``trivault deid ...`` or the top-level help."""
    if len(argv) > 1 and argv[1] not in ("deid", "--help", "-h"):
        return
    try:
        from ..deid.cli import app as deid_app
    except ImportError:  # the de-identification package is optional
        return
    app.add_typer(deid_app, name="deid", help="De-identification tools (faces, plates).")


def main() -> None:
    """Console-script entry point."""
    add_deid(sys.argv)
    app()
