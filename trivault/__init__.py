"""TriVault's Python SDK: ``import trivault``.

Secure three-party image retrieval: images are encrypted and their features secret-shared
across three servers; searches run on secret shares, so no server sees a query, an image
or a result. The packages stay where they are (``client``, ``servers``, ``wire``,
``protocols``, ``index``); this namespace gathers what an SDK user needs::

    import trivault

    with trivault.Client("client.toml") as client:
        distances, ids = client.search(["query.jpg", "other.png"], k=5)

See README.md, "Python SDK".
"""

from __future__ import annotations

from client.catalog import ImageEntry
from client.config import ClientConfig, ConfigError
from client.errors import PartialCommitError, TriVaultError, TriVaultUnavailable, TriVaultWarning, UploadInterrupted
from client.identity import Identity
from client.integrity import TamperError
from client.retrieval import Retrieved
from client.sdk import Client
from client.search import SearchBatch, SearchResult
from wire.identity import PublicIdentity

from .models import build_model

__version__ = "0.1.0"

__all__ = ["Client", "ClientConfig", "ConfigError", "Identity", "ImageEntry", "PartialCommitError", "PublicIdentity",
           "Retrieved", "SearchBatch", "SearchResult", "TamperError", "TriVaultError", "TriVaultUnavailable",
           "TriVaultWarning", "UploadInterrupted", "__version__", "build_model"]
