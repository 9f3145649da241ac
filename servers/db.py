"""The one SQLite helper of a server's databases: WAL journal, autocommit, a writer lock.

Every store (``Store``, ``PolicyStore``, ``RequestVerifier``, ``AuditLog``) opens its file
through :class:`Database` and runs multi-statement writes in :meth:`Database.transaction`
(``BEGIN IMMEDIATE`` ... ``COMMIT``, ``ROLLBACK`` on any exception), so a crash leaves
either all or none of a write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Database:
    """One SQLite connection shared by a store's threads (writes serialised by ``lock``)."""

    def __init__(self, path: str | Path, schema: str = "", durable: bool = False) -> None:
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        if durable:  # fsync on every commit (transactions that move files must survive a power cut)
            self.conn.execute("PRAGMA synchronous=FULL")
        if schema:
            self.conn.executescript(schema)
        self.lock = threading.RLock()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement (autocommit)."""
        return self.conn.execute(sql, args)

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple | None:
        """The first row of a query, or None."""
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """Every row of a query."""
        return self.conn.execute(sql, args).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """``with db.transaction() as cur:`` one atomic write under the lock."""
        with self.lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
