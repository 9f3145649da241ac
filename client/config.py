"""The SDK's configuration: server addresses, TLS files, owner directory, RPC timeout."""

from __future__ import annotations

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from dataclasses import dataclass
from pathlib import Path


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
    def load(cls, path: str | Path) -> "ClientConfig":
        """Read a client TOML file (relative paths are relative to it)."""
        path = Path(path)
        raw = tomllib.loads(path.read_text())
        base = path.resolve().parent

        def p(k: str, default: str | None = None) -> Path:
            q = Path(raw.get(k, default))
            return q if q.is_absolute() else base / q

        if len(raw.get("servers", [])) != 3:
            raise ValueError("client config must list exactly three server addresses")
        return cls(list(raw["servers"]), p("ca"), p("cert"), p("key"), p("owner_dir", "trivault-owner"),
                   float(raw.get("timeout_s", 60.0)))
