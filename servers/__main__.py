"""``python -m servers --id N --config FILE``: run one TriVault server."""

from __future__ import annotations

import argparse
import logging
import os

import torch

from .app import Components, serve
from .config import load_config

_DEFAULT_COMPONENTS = Components()


def main(argv: list[str] | None = None, components: Components = _DEFAULT_COMPONENTS) -> None:
    """Parse arguments, configure logging and threads, serve (a server built from ``components``)."""
    ap = argparse.ArgumentParser(prog="python -m servers", description="Run one TriVault server.")
    ap.add_argument("--id", type=int, required=True, choices=(0, 1, 2), help="server id")
    ap.add_argument("--config", required=True, help="cluster TOML file")
    ap.add_argument("--txn-timeout", type=float, default=60.0, help="abort prepared uploads after this (s)")
    ap.add_argument("--log-level", default=os.environ.get("TRIVAULT_LOG", "INFO"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level, format=f"%(asctime)s S{a.id} %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(int(os.environ.get("TRIVAULT_TORCH_THREADS", "1")))
    serve(load_config(a.config, a.id), a.txn_timeout, components)


if __name__ == "__main__":
    main()
