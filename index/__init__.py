"""TriVault index package: owner-side padded k-means index and its shared upload format.

``build_index`` (plaintext, owner) -> :class:`PlainIndex` (``insert``, ``delete``,
``to_faiss``, ``search``); ``share_index`` -> one :class:`IndexShares` per server;
``share_update`` re-shares the records an insert/delete touched.
"""

from .build import IndexUpdate, PlainIndex, build_index
from .shares import IndexShares, IndexUpdateShares, share_index, share_update

__all__ = [
    "IndexShares",
    "IndexUpdate",
    "IndexUpdateShares",
    "PlainIndex",
    "build_index",
    "share_index",
    "share_update",
]
