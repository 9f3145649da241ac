"""TriVault index package: owner-side padded k-means index and the owner side of its shared layout.

``build_index`` (plaintext, owner) -> :class:`PlainIndex` (``insert``, ``delete``,
``to_faiss``, ``search``); ``share_index`` -> one :class:`IndexShares` per server (the layout is defined in
``protocols.layout``);
``share_update`` re-shares the records an insert/delete touched.
"""

from protocols.layout import IndexShares, IndexUpdateShares

from .build import IndexUpdate, PlainIndex, build_index
from .shares import share_index, share_update

__all__ = [
    "IndexShares",
    "IndexUpdate",
    "IndexUpdateShares",
    "PlainIndex",
    "build_index",
    "share_index",
    "share_update",
]
