"""The data owner's local catalog of uploaded images: id, name, collection, size, content hash.

Names are sensitive, so they stay with the owner: ``owner_dir/catalog.json`` is written
atomically after each committed upload or delete and never sent anywhere. ``name`` is the
label given to ``upload`` or else the file name of a path input (None for in-memory
images). ``sha256`` is the hash of the original file bytes (duplicate detection).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageEntry:
    """One image as its owner knows it (``size``: bytes of the original file; None if unknown)."""

    id: int
    name: str | None
    collection: str | None
    size: int | None
    sha256: str | None = None
    deid: bool = False


class Catalog:
    """``owner_dir/catalog.json``: the owner's image entries by id."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / "catalog.json"
        self._lock = threading.Lock()

    def entries(self) -> dict[int, ImageEntry]:
        """Every recorded image by id (empty if nothing was recorded here)."""
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        return {int(e["id"]): ImageEntry(**e) for e in raw.get("images", [])}

    def add(self, new: Iterable[ImageEntry]) -> None:
        """Record newly committed images."""
        with self._lock:
            cur = self.entries()
            cur.update({e.id: e for e in new})
            self._write(cur)

    def remove(self, image_ids: Iterable[int]) -> None:
        """Forget deleted images."""
        with self._lock:
            cur = self.entries()
            for i in image_ids:
                cur.pop(int(i), None)
            self._write(cur)

    def _write(self, entries: dict[int, ImageEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"images": [asdict(entries[i]) for i in sorted(entries)]}, indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
