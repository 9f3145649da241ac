"""The SDK's configuration: server addresses, TLS files, owner directory, RPC timeout."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import TriVaultError


class ConfigError(TriVaultError, ValueError):
    """A client config that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ClientConfig:
    """Server addresses, TLS files, the owner's local state directory and the RPC timeout."""

    servers: list[str]
    ca: Path
    cert: Path
    key: Path
    owner_dir: Path = Path("trivault-owner")
    timeout_s: float = 60.0

    @classmethod
    def load(cls, path: str | Path) -> ClientConfig:
        """Read a client TOML file (relative paths are relative to it); :class:`ConfigError` names
        the file and the missing or bad setting."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no client config at {path}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable TOML file ({exc})") from None
        base = path.resolve().parent

        def p(k: str, default: str | None = None) -> Path:
            if raw.get(k, default) is None:
                raise ConfigError(f"{path}: missing {k!r} (the {FILE_HELP[k]})")
            q = Path(raw.get(k, default))
            q = q if q.is_absolute() else base / q
            if k in FILE_HELP and not q.is_file():
                raise ConfigError(f"{path}: {k} = {raw[k]!r}: no such file {q}")
            return q

        servers = raw.get("servers", [])
        if not isinstance(servers, list) or len(servers) != 3:
            raise ConfigError(f"{path}: client config must list exactly three server addresses "
                              'as servers = ["host:port", "host:port", "host:port"]')
        try:
            timeout_s = float(raw.get("timeout_s", 60.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: timeout_s must be a number of seconds") from None
        return cls([str(s) for s in servers], p("ca"), p("cert"), p("key"), p("owner_dir", "trivault-owner"),
                   timeout_s)


FILE_HELP = {"ca": "deployment CA certificate, ca.pem", "cert": "client certificate (PEM)",
             "key": "client private key (PEM)"}
