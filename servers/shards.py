"""One server as a Ray cluster: its IVF buckets split over N shard actors (issue 15).

A server configured with ``[shards] workers = N`` (or ``address = "..."``, an existing Ray
cluster of ITS OWN trust domain) is a Ray driver. :class:`ShardPool` starts (or joins)
that cluster and creates N :class:`BucketShard` actors; actor ``s`` holds the contiguous
bucket range ``bucket_ranges(C, N)[s]`` of this server's share pair: its rows of
``rows.lo/hi`` and ``centroids.lo/hi``, memory-mapped straight out of the stored
``objects/index/v<V>.npz`` (``np.savez`` stores members uncompressed, so each member is a
plain ``.npy`` image at a fixed offset inside the file: :func:`npz_member`). Mapping costs
no copy: a (re)started actor reads its range from the page cache or the disk on demand.

Per query (``servers.sharded_search``), every actor computes its LOCAL part only:

* ``centroid_cross(q_lo, q_hi)``: the cross terms ``q_i . (c_i + c_{i+1}) + q_{i+1} . c_i``
  of its centroids (columns ``[first, last)`` of the 3-out-of-3 centroid distances);
* ``fetch(a, b)``: ``sum_c a[:, c] X_i[c] + b[:, c] X_{i+1}[c]`` over its buckets, where
  ``a = e_i + e_{i+1}``, ``b = e_i`` are this server's one-hot components.

Both are linear in the buckets, so the driver adds (or concatenates) the partial results
in the ring with no interaction, masks the sum with the zero-sharing and runs the rest of
the protocol unchanged. The peers never see a shard: what leaves the server is exactly what
the unsharded server sends.

Updates: an upload, insert, delete or rebuild commits a new index version file in the
store (``servers.txn``); every call carries the version, and each actor maps its own range
of that version when it first sees it (a rebuild that changes ``C`` re-creates the actors
with new ranges). Failures: an actor that dies is restarted by Ray (``max_restarts``) from
the stored shares; the call in flight raises :class:`ShardError` (a ``CommError``, so the
server aborts the session at its peers and the client gets UNAVAILABLE naming the shard);
every wait is bounded by ``timeout_s``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocols.comm import CommError
from protocols.search import centroid_cross, record_cross, selection_terms

log = logging.getLogger("trivault.shards")

SHARD_PAIRS = ("rows", "centroids")


class ShardError(CommError):
    """A shard actor failed, died or did not answer in time; the query was aborted."""


def npz_member(path: str | Path, name: str, mode: str = "c") -> np.ndarray:
    """Member ``name`` of an uncompressed ``.npz`` memory-mapped in place (no copy).

    ``mode="c"`` (copy-on-write) gives a writable view whose pages are read from the file
    on demand and never written back. Raises ``ValueError`` for a compressed member.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{path.name}:{name} is compressed; only np.savez files can be mapped")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path.name}: bad zip local header for {name}")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if fortran:
        raise ValueError(f"{path.name}:{name} is Fortran-ordered")
    return np.memmap(path, dtype=dtype, mode=mode, offset=offset, shape=shape)  # type: ignore[call-overload]


def init_ray(attempts: int = 3, **kwargs: Any) -> Any:
    """``ray.init(**kwargs)``, retried when the local node misses Ray's fixed 30 s start-up
    deadline (it does on an overloaded machine); returns Ray's context."""
    import ray

    for attempt in range(attempts):
        try:
            return ray.init(**kwargs)
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
            log.warning("Ray node start-up timed out (machine busy); retrying")
            ray.shutdown()
    raise AssertionError("unreachable")


def bucket_ranges(n_centroids: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[first, last)`` bucket ranges, sizes differing by at most one, none empty."""
    if n_centroids < 1 or workers < 1:
        raise ValueError("need at least one bucket and one worker")
    w = min(workers, n_centroids)
    edges = [round(s * n_centroids / w) for s in range(w + 1)]
    return [(edges[s], edges[s + 1]) for s in range(w)]


class BucketShard:
    """One Ray actor: buckets ``[first, last)`` of one server's index share pair (memory-mapped)."""

    def __init__(self, index_dir: str, first: int, last: int) -> None:
        torch.set_num_threads(1)
        self.index_dir, self.first, self.last = Path(index_dir), first, last
        self.version = 0
        self.parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def load(self, version: int) -> dict[str, int]:
        """Map this shard's range of index version ``version``; returns :meth:`info`."""
        if version != self.version:
            path = self.index_dir / f"v{version}.npz"
            parts = {}
            for name in SHARD_PAIRS:
                lo, hi = (npz_member(path, f"{name}.{h}")[self.first : self.last] for h in ("lo", "hi"))
                parts[name] = (torch.from_numpy(lo), torch.from_numpy(hi))
            self.parts, self.version = parts, version
        return self.info()

    def info(self) -> dict[str, int]:
        """Public facts: pid, bucket range, version, bytes of shares mapped, resident set size."""
        mapped = sum(t.numel() * t.element_size() for pair in self.parts.values() for t in pair)
        rss = 0
        try:
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
        return {"pid": os.getpid(), "first": self.first, "last": self.last, "version": self.version,
                "mapped_bytes": mapped, "rss_bytes": rss}

    def centroid_cross(self, version: int, q_lo: np.ndarray, q_hi: np.ndarray) -> np.ndarray:
        """Local cross terms ``q_lo . (c_lo + c_hi) + q_hi . c_lo`` for this shard's centroids ``[Q, m]``."""
        self.load(version)
        return centroid_cross(torch.from_numpy(q_lo), torch.from_numpy(q_hi), *self.parts["centroids"]).numpy()

    def record_terms(self, version: int, q_sum: np.ndarray, q_lo: np.ndarray) -> np.ndarray:
        """``X_lo q_sum + X_hi q_lo`` for every record of this shard's buckets, ``[Q, m B]``
        (``protocols.search.SharedIndexView.record_terms`` over this range; queries padded to the record width)."""
        self.load(version)
        a, b = torch.from_numpy(np.array(q_sum)), torch.from_numpy(np.array(q_lo))
        x_lo, x_hi = (t.reshape(-1, a.shape[1]) for t in self.parts["rows"])
        return record_cross(x_lo, x_hi, a, b).numpy()

    def columns(self, version: int, cols: list[int], width: int) -> tuple[np.ndarray, np.ndarray]:
        """Columns ``cols`` of every record of this shard's buckets (records of ``width`` elements),
        ``[m B, len(cols)]`` each."""
        self.load(version)
        lo, hi = (t.reshape(-1, width)[:, cols].contiguous().numpy() for t in self.parts["rows"])
        return lo, hi

    def fetch(self, version: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Local part of the oblivious fetch, ``a @ X_lo + b @ X_hi`` over this shard's buckets ``[P, W]``
        (``protocols.search.selection_terms``, as ``oblivious_fetch``: each row read once per probe)."""
        self.load(version)
        m = a.shape[1]
        if m != self.last - self.first:
            raise ValueError(f"selection over {m} buckets, shard holds {self.last - self.first}")
        return selection_terms(torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b)),
                               *self.parts["rows"]).numpy()


class ShardPool:
    """The Ray driver side of one server: its shard actors and bounded calls to them.

    ``address=None`` starts a private local Ray cluster on this machine with ``workers * worker_cpus``
    CPUs under ``temp_dir``; otherwise joins the given Ray cluster (its own trust domain).
    Each actor reserves ``worker_cpus`` CPUs; ``max_restarts`` (-1: always) is Ray's.
    """

    def __init__(self, server_id: int, workers: int, address: str | None = None, timeout_s: float = 30.0,
                 temp_dir: str | None = None, object_store_bytes: int = 200 * 2**20, max_restarts: int = -1,
                 worker_cpus: float = 1.0) -> None:
        if workers < 1:
            raise ValueError("a shard pool needs at least one worker")
        self.server_id, self.workers, self.address, self.timeout_s = server_id, workers, address, timeout_s
        self.temp_dir = temp_dir or os.path.join(tempfile.gettempdir(), f"tvray-s{server_id}-{os.getpid()}")
        self._own_temp = temp_dir is None
        self.object_store_bytes, self.max_restarts = object_store_bytes, max_restarts
        self.worker_cpus = worker_cpus
        self.actors: list[Any] = []
        self.ranges: list[tuple[int, int]] = []
        self.index_dir: Path | None = None

    def start(self) -> ShardPool:
        """Start or join this server's Ray cluster."""
        import ray

        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                              "namespace": f"trivault-server{self.server_id}"}
        if self.address:
            ray.init(address=self.address, **kw)
        else:
            init_ray(num_cpus=max(1, math.ceil(self.workers * self.worker_cpus)), _temp_dir=self.temp_dir,
                     object_store_memory=self.object_store_bytes, **kw)
        log.info("server %d: Ray driver up (%s), %d shard workers", self.server_id,
                 self.address or "private local cluster", self.workers)
        return self

    def bind(self, index_dir: Path, version: int, n_centroids: int) -> list[dict[str, int]]:
        """Make the actors serve ``index_dir/v<version>.npz``; (re)creates them if ``C`` changed."""
        import ray

        ranges = bucket_ranges(n_centroids, self.workers)
        if ranges != self.ranges or Path(index_dir) != self.index_dir:
            self._kill_actors()
            remote = ray.remote(num_cpus=self.worker_cpus, max_restarts=self.max_restarts,
                                max_task_retries=0)(BucketShard)
            self.actors = [remote.remote(str(index_dir), a, b) for a, b in ranges]
            self.ranges, self.index_dir = ranges, Path(index_dir)
        # starting actors is process start-up (slow on a loaded machine), not query work: a wider bound
        infos = self.call([a.load.remote(version) for a in self.actors], timeout_s=max(self.timeout_s, 600.0))
        for s, inf in enumerate(infos):
            log.info("server %d: shard %d/%d buckets [%d, %d) v%d pid %d, %d bytes mapped", self.server_id, s,
                     len(infos), inf["first"], inf["last"], version, inf["pid"], inf["mapped_bytes"])
        return infos

    def call(self, refs: list[Any], timeout_s: float | None = None) -> list[Any]:
        """``ray.get`` of one call per shard with one deadline; any failure -> :class:`ShardError`."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        out = []
        for s, ref in enumerate(refs):
            where = f"server {self.server_id}: shard {s} of {len(refs)} (buckets {self.ranges[s]})"
            try:
                out.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
            except GetTimeoutError:
                raise ShardError(f"{where} did not answer within {timeout_s or self.timeout_s:.0f} s; "
                                 "the query was aborted") from None
            except RayActorError:
                raise ShardError(f"{where} died; Ray restarts it from the stored shares. "
                                 "The query was aborted: retry it") from None
            except RayError as exc:
                raise ShardError(f"{where} failed ({type(exc).__name__}); the query was aborted") from None
        return out

    def info(self) -> list[dict[str, int]]:
        """Each actor's :meth:`BucketShard.info` (pid, range, version, mapped bytes, RSS)."""
        return self.call([a.info.remote() for a in self.actors])

    def _kill_actors(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors, self.ranges = [], []

    def close(self) -> None:
        """Kill this pool's actors (the Ray session stays up)."""
        import ray

        if ray.is_initialized():
            self._kill_actors()

    def shutdown(self) -> None:
        """Kill the actors, leave (or stop) the Ray cluster, remove a private temp dir."""
        import ray

        self.close()
        if ray.is_initialized():
            ray.shutdown()
        if self._own_temp:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
