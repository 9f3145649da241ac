"""What every ``trivault`` command shares: consoles, exit codes, config discovery, the SDK
client, error reporting with hints, JSON output and silencing library noise on stdout."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

STDOUT_IS_TTY = sys.stdout.isatty()  # taken at start: library prints are sent to stderr later
_WIDTH = None if STDOUT_IS_TTY else 120  # pipes and files: wide enough for paths and tables
console = Console(soft_wrap=True, width=_WIDTH)  # results (stdout)
err = Console(stderr=True, soft_wrap=True, width=_WIDTH)  # errors, notes, warnings (stderr)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EPILOG = ("Client config: --config FILE, else $TRIVAULT_CONFIG, else the user's config directory "
          "($XDG_CONFIG_HOME/trivault/client.toml, default ~/.config/trivault/client.toml; `trivault up` "
          "writes it). Identity: --identity DIR, else $TRIVAULT_IDENTITY, else the owner's. "
          "Exit codes: 0 ok; 1 error (one line on stderr, with a hint); 2 usage error; "
          "3 partial upload (some files skipped as unreadable).")

CONFIG_OPT = typer.Option(None, "--config", "-c", help="client TOML (default: $TRIVAULT_CONFIG, then "
                                                       "~/.config/trivault/client.toml)")
IDENTITY_OPT = typer.Option(None, "--identity", "-i", help="identity directory (default: $TRIVAULT_IDENTITY or "
                                                          "the owner's)")
JSON_OPT = typer.Option(False, "--json", help="print the result as JSON on stdout")
REQUIRED_KEYS = {"servers": "the three server addresses", "ca": "the CA certificate file",
                 "cert": "this client's certificate file", "key": "this client's private key file"}


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/trivault/client.toml`` (default ``~/.config/trivault/client.toml``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trivault" / "client.toml"


def find_config(config: Path | None) -> Path:
    """The client config: ``--config``, then ``$TRIVAULT_CONFIG``, then the user's config directory."""
    if config is not None:
        where = "--config"
    elif os.environ.get("TRIVAULT_CONFIG"):
        config, where = Path(os.environ["TRIVAULT_CONFIG"]), "$TRIVAULT_CONFIG"
    else:
        config, where = user_config_path(), "the user config directory"
        if not config.exists():
            fail(f"no client config at {config}",
                 "start local servers with `trivault up --detach` (it writes this file), or pass --config "
                 "/ set TRIVAULT_CONFIG")
    if not config.exists():
        fail(f"client config {config} (from {where}) not found", "check the path, or run `trivault up --detach`")
    check_config(config)
    return config


def check_config(path: Path) -> None:
    """Name a missing or unreadable field of a client config before the SDK trips on it."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"client config {path} is not valid TOML ({exc})")
    for key, what in REQUIRED_KEYS.items():
        if key not in raw:
            fail(f"client config {path} has no `{key}` ({what})",
                 "configs written by `trivault up` have it; copy the missing line from there")
    for key in ("ca", "cert", "key"):
        p = Path(raw[key])
        p = p if p.is_absolute() else path.resolve().parent / p
        if not p.exists():
            fail(f"client config {path}: `{key}` file {p} not found")


def identity_dir(identity: Path | None) -> Path | None:
    """``--identity``, else ``$TRIVAULT_IDENTITY``, else None (the SDK uses the owner's)."""
    if identity is not None:
        return identity
    env = os.environ.get("TRIVAULT_IDENTITY")
    return Path(env) if env else None


def make_client(config: Path | None, identity: Path | None = None):
    """The SDK client (progress bars only when stdout is a terminal)."""
    from ..sdk import Client

    cfg = find_config(config)
    pw = os.environ.get("TRIVAULT_PASSPHRASE")
    with quiet_stdout():  # progress bars (on stderr) only for a person at a terminal
        return Client(
            cfg, progress=STDOUT_IS_TTY, identity=identity_dir(identity), passphrase=pw.encode() if pw else None
        )


HINTS = (
    ("UNAVAILABLE", "is `trivault up` running? (`trivault status` shows each server)"),
    ("unknown-signer", "this identity is not registered: the owner runs `trivault register DIR/identity.json`"),
    ("PERMISSION_DENIED", ("ask the owner for a grant (`trivault grant`); if the grant lists --purpose, pass the "
                           "same --purpose here")),
    ("DEADLINE_EXCEEDED", "a server is slow or stuck: `trivault status`; raise timeout_s in the client config"),
)


def hint_for(message: str, extra: tuple[tuple[str, str], ...] = ()) -> str | None:
    """A hint for a known failure, from its message (``extra`` (needle, hint) pairs first; "" matches all)."""
    return next((h for needle, h in (*extra, *HINTS) if needle in message), None)


def fail(message: str, hint: str | None = None, code: int = EXIT_ERROR) -> NoReturn:
    """One line on stderr (``error: ...``), a hint line if any, then exit ``code``."""
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    if hint:
        err.print(f"hint: {hint}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    """A note on stderr."""
    err.print(f"note: {message}", markup=False, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A warning on stderr."""
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def first_line(exc: BaseException) -> str:
    """The exception's message on one line (long server tracebacks stay in the server log)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if "\n" in text else text


@contextlib.contextmanager
def sdk_errors(*extra: tuple[str, str], quiet: bool = True) -> Iterator[None]:
    """Turn SDK/gRPC/file errors into one line on stderr with a hint, exit 1; library prints
    go to stderr meanwhile (``quiet``)."""
    import grpc

    try:
        with quiet_stdout() if quiet else contextlib.nullcontext():
            yield
    except typer.Exit:
        raise
    except grpc.RpcError as exc:  # not wrapped by the SDK
        msg = f"{exc.code().name}: {exc.details()}"
        fail(msg, hint_for(msg, extra))
    except (ValueError, RuntimeError, OSError, KeyError, TypeError) as exc:
        msg = first_line(exc)
        fail(msg, hint_for(msg, extra))


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send library prints (Python and C level: "Loaded pretrained weights", faiss warnings)
    to stderr while SDK code runs, so stdout carries only the command's result."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        saved = None
    old = sys.stdout
    sys.stdout = sys.stderr
    try:
        if saved is not None:
            os.dup2(2, 1)
        yield
    finally:
        sys.stdout = old
        if saved is not None:
            try:
                sys.__stdout__.flush() if sys.__stdout__ else None
            finally:
                os.dup2(saved, 1)
                os.close(saved)


def print_json(obj: Any) -> None:
    """JSON on stdout (one document)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
