"""Import CrypTen 0.4.1 on torch 2.13 (benchmarks and cross-checks ONLY, never the product).

CrypTen 0.4.1 (2022) is installed with ``pip install --no-deps crypten==0.4.1`` plus its
runtime needs (``omegaconf onnx pandas pyyaml scipy``); ``scripts/setup.sh --bench`` does
that. Its ONNX converter imports ``torch.onnx._internal.registration``, which torch 2.13
no longer has; we register an empty stand-in module before import (the converter is not
used by our benchmarks).

``run_crypten(fn, *args)`` runs ``fn(rank, *args)`` in 3 processes over gloo on loopback
(``crypten.mpc.run_multiprocess``) and returns rank 0's result (passed back by a queue).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import types
from collections.abc import Callable
from typing import Any


def import_crypten():
    """Return the ``crypten`` module, or raise ImportError with the install hint."""
    name = "torch.onnx._internal.registration"
    if name not in sys.modules:
        stub = types.ModuleType(name)
        stub.registry = None  # type: ignore[attr-defined]
        sys.modules[name] = stub
    try:
        import crypten
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "CrypTen is not installed: pip install --no-deps crypten==0.4.1 "
            "omegaconf onnx pandas pyyaml scipy (or bash scripts/setup.sh --bench)"
        ) from exc
    return crypten


def available() -> bool:
    """True if CrypTen can be imported here."""
    try:
        import_crypten()
        return True
    except Exception:  # noqa: BLE001
        return False


def _worker(rank: int, world: int, port: int, fn, args, q) -> None:
    import os

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), RENDEZVOUS="env://",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
    )
    import torch

    torch.set_num_threads(1)
    crypten = import_crypten()
    crypten.init()
    try:
        out = fn(rank, *args)
        if rank == 0:
            q.put(("ok", out))
    except Exception as exc:  # noqa: BLE001
        q.put(("error", f"rank {rank}: {type(exc).__name__}: {exc}"))
    finally:
        crypten.uninit()


def run_crypten(fn: Callable[..., Any], *args: Any, world_size: int = 3, timeout_s: float = 900) -> Any:
    """Run ``fn(rank, *args)`` on ``world_size`` CrypTen processes (loopback); return rank 0's value.

    ``fn`` must be a module-level function (it is pickled to the workers) and return
    something picklable (e.g. a dict of timings).
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, fn, args, q)) for r in range(world_size)]
    for p in procs:
        p.start()
    try:
        status, value = q.get(timeout=timeout_s)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    if status != "ok":
        raise RuntimeError(f"CrypTen run failed: {value}")
    return value
