"""Per-server storage: SQLite (metadata, transactions, sessions) + atomically written files.

Layout of ``data_dir``::

    meta.db                 images, txns, kv (current index/model versions), sessions
    objects/img/<id>.enc    AES-256-GCM ciphertext of an image (and <id>.deid.enc)
    objects/key/<id>.npz    this server's share pair of the image key (and <id>.deid.npz)
    objects/img/<id>.meta   the owner's name/label of the image, AES-256-GCM (client.metadata)
    objects/key/<id>.meta.npz  this server's share pair of that metadata key (``images.label``
                            is no longer written: names never reach a server in clear)
    objects/pix/<id>.npz    this server's pixel-share pair and mark keys (servers.release; and .deid)
    objects/index/v<N>.npz  this server's index tensors, version N
    objects/model/v<N>.npz  this server's model weight pairs, version N
    staging/<txn>/...       files of a prepared (not yet committed) transaction

Every file is written as temp file + fsync + rename (+ fsync of the directory), so a
crash leaves either the old or the new file. A transaction is *prepared* (files staged
and fsynced, row ``prepared``) then *committed* (staged files renamed into ``objects/``,
rows inserted, state ``committed``) in one SQLite transaction; commit is idempotent, so
a server killed half-way finishes it on restart. The audit log is ``servers.audit``
(hash-chained, ``audit.db``); this store keeps none.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, label TEXT, nbytes INTEGER NOT NULL,
    has_deid INTEGER NOT NULL, txn TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS txns (id TEXT PRIMARY KEY, state TEXT NOT NULL, meta TEXT NOT NULL,
    files TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, ts REAL NOT NULL);
"""


class StorageError(ValueError):
    """A request the store cannot honour (unknown id, conflicting transaction, ...)."""


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via temp file + fsync + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}_{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def tensors_to_npz(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialise int64/uint8 tensors as npz bytes (no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: v.numpy() for k, v in tensors.items()})  # type: ignore[arg-type]
    return buf.getvalue()


def npz_to_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read an npz file written by :func:`tensors_to_npz` (each member read once into its own
    writable array: no second copy, so loading a 1M-row index does not need twice its size)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


class DataDirLock:
    """An exclusive ``fcntl.flock`` on ``data_dir/server.lock``, held while a server runs.

    A second server started on the same data folder fails at once with a clear
    :class:`StorageError` instead of sharing (and corrupting) the first one's state. The
    kernel drops the lock when the holder exits, even on SIGKILL, so a crashed server never
    leaves a stale lock behind. The file records the holder's pid (for the message only)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "server.lock"
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock or raise StorageError naming the folder and the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StorageError(f"data folder {self.path.parent} is in use by another server (pid {holder}); "
                               "stop it first or give this server its own data folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Store:
    """One server's durable state. Thread-safe (one lock around SQLite writes)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.objects = self.root / "objects"
        self.staging = self.root / "staging"
        for d in (self.objects / "img", self.objects / "key", self.objects / "index", self.objects / "model",
                  self.staging):
            d.mkdir(parents=True, exist_ok=True)
        self.db = Database(self.root / "meta.db", _SCHEMA, durable=True)
        self.on_commit: Any = None  # called with a transaction's meta once it commits (ACL assignments)

    # ---- key/value and sessions ---------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """JSON value stored under ``key``."""
        row = self.db.one("SELECT value FROM kv WHERE key=?", (key,))
        return json.loads(row[0]) if row else default

    def claim_session(self, session_id: str) -> None:
        """Record a protocol session id; a reused id is refused (it would reuse PRG streams)."""
        with self.db.lock:
            try:
                self.db.execute("INSERT INTO sessions VALUES (?,?)", (session_id, time.time()))
            except sqlite3.IntegrityError:
                raise StorageError(f"session id {session_id} was already used") from None

    # ---- images -------------------------------------------------------------------
    def image_ids(self) -> list[int]:
        """Committed image ids, ascending."""
        return [r[0] for r in self.db.all("SELECT id FROM images ORDER BY id")]

    def image_row(self, image_id: int) -> dict[str, Any]:
        """Metadata of a committed image; StorageError if unknown."""
        row = self.db.one("SELECT id, label, nbytes, has_deid FROM images WHERE id=?", (image_id,))
        if row is None:
            raise StorageError(f"unknown image id {image_id}")
        return {"id": row[0], "label": row[1], "nbytes": row[2], "has_deid": bool(row[3])}

    def image_files(self, image_id: int, deid: bool = False) -> tuple[bytes, dict[str, torch.Tensor]]:
        """(ciphertext, key share tensors) of a committed image."""
        row = self.image_row(image_id)
        if deid and not row["has_deid"]:
            raise StorageError(f"image {image_id} has no de-identified copy")
        suffix = ".deid" if deid else ""
        ct = (self.objects / "img" / f"{image_id}{suffix}.enc").read_bytes()
        return ct, npz_to_tensors(self.objects / "key" / f"{image_id}{suffix}.npz")

    def image_record(self, image_id: int, deid: bool = False) -> bytes:
        """The owner's sealed integrity record of an image (b"" if none was uploaded)."""
        p = self.objects / "img" / f"{int(image_id)}{'.deid' if deid else ''}.rec"
        return p.read_bytes() if p.exists() else b""

    # ---- versions -----------------------------------------------------------------
    def current(self, what: str) -> tuple[int, dict[str, Any] | None]:
        """(version, public meta) of the current ``index`` or ``model`` (version 0 = none)."""
        return int(self.get(f"{what}_version", 0)), self.get(f"{what}_meta")

    def load_tensors(self, what: str, version: int) -> dict[str, torch.Tensor]:
        """Tensors of ``index``/``model`` version ``version``."""
        return npz_to_tensors(self.objects / what / f"v{version}.npz")

    # ---- two-phase transactions ---------------------------------------------------
    def txn_state(self, txn_id: str) -> str:
        """'prepared', 'committed', 'aborted' or 'unknown'."""
        row = self.db.one("SELECT state FROM txns WHERE id=?", (txn_id,))
        return row[0] if row else "unknown"

    def txn_created(self, txn_id: str) -> float | None:
        """When a transaction was first seen (epoch s), or None if unknown."""
        row = self.db.one("SELECT created FROM txns WHERE id=?", (txn_id,))
        return float(row[0]) if row else None

    def pending_txns(self) -> list[str]:
        """Prepared transactions awaiting a decision."""
        return [r[0] for r in self.db.all("SELECT id FROM txns WHERE state='prepared' ORDER BY created")]

    def prepare(self, txn_id: str, meta: dict[str, Any], files: dict[str, bytes]) -> None:
        """Phase 1: stage ``files`` (relative object paths -> bytes) durably and record the vote."""
        if not txn_id or "/" in txn_id or ".." in txn_id:
            raise StorageError("bad transaction id")
        with self.db.lock:
            if self.txn_state(txn_id) != "unknown":
                raise StorageError(f"transaction {txn_id} already exists")
            for other in self.pending_txns():
                raise StorageError(f"another transaction ({other}) is pending; retry later")
            d = self.staging / txn_id
            for rel, data in files.items():
                write_atomic(d / rel, data)
            self.db.execute(
                "INSERT INTO txns VALUES (?,?,?,?,?)",
                (txn_id, "prepared", json.dumps(meta), json.dumps(sorted(files)), time.time()),
            )

    def commit(self, txn_id: str) -> str:
        """Phase 2: move staged files into place and apply metadata. Idempotent."""
        with self.db.lock:
            row = self.db.one("SELECT state, meta, files FROM txns WHERE id=?", (txn_id,))
            if row is None:
                raise StorageError(f"unknown transaction {txn_id}")
            state, meta, files = row[0], json.loads(row[1]), json.loads(row[2])
            if state == "committed":
                return state
            if state == "aborted":
                raise StorageError(f"transaction {txn_id} was aborted")
            stage = self.staging / txn_id
            for rel in files:
                src, dst = stage / rel, self.objects / rel
                if src.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, dst)
                    fsync_dir(dst.parent)
                elif not dst.exists():
                    raise StorageError(f"transaction {txn_id}: staged file {rel} is missing")
            now = time.time()
            with self.db.transaction() as cur:
                for im in meta.get("images", []):
                    cur.execute(
                        "INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?)",
                        (int(im["id"]), im.get("label"), int(im["nbytes"]), int(bool(im.get("deid"))), txn_id, now),
                    )
                for i in meta.get("deletes", []):
                    cur.execute("DELETE FROM images WHERE id=?", (int(i),))
                for what in ("index", "model"):
                    if what in meta:
                        put = "INSERT OR REPLACE INTO kv VALUES (?,?)"
                        cur.execute(put, (f"{what}_version", json.dumps(meta[what]["version"])))
                        cur.execute(put, (f"{what}_meta", json.dumps(meta[what]["meta"])))
                cur.execute("UPDATE txns SET state='committed' WHERE id=?", (txn_id,))
            shutil.rmtree(stage, ignore_errors=True)
            self._gc(meta)
            if self.on_commit is not None:
                self.on_commit(meta)
            return "committed"

    def _gc(self, meta: dict[str, Any]) -> None:
        """Remove files no committed state refers to (deleted images, old versions)."""
        for i in meta.get("deletes", []):
            for p in (self.objects / "img").glob(f"{int(i)}.*"):
                p.unlink(missing_ok=True)
            for p in (self.objects / "key").glob(f"{int(i)}.*"):
                p.unlink(missing_ok=True)
            for p in (self.objects / "pix").glob(f"{int(i)}.*"):
                p.unlink(missing_ok=True)
        for what in ("index", "model"):
            if what in meta:
                keep = f"v{meta[what]['version']}.npz"
                for p in (self.objects / what).glob("v*.npz"):
                    if p.name != keep:
                        p.unlink(missing_ok=True)

    def abort(self, txn_id: str) -> str:
        """Drop a prepared transaction (no effect on committed state)."""
        with self.db.lock:
            state = self.txn_state(txn_id)
            if state == "committed":
                raise StorageError(f"transaction {txn_id} is already committed")
            if state == "prepared":
                self.db.execute("UPDATE txns SET state='aborted' WHERE id=?", (txn_id,))
            elif state == "unknown":  # remember it, so a late prepare of this id is refused
                self.db.execute("INSERT INTO txns VALUES (?,?,?,?,?)", (txn_id, "aborted", "{}", "[]", time.time()))
            shutil.rmtree(self.staging / txn_id, ignore_errors=True)
            return "aborted" if state != "unknown" else "unknown"

    def close(self) -> None:
        """Close the database."""
        self.db.close()
