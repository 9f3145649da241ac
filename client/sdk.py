"""The TriVault Python SDK: ``Client(config)`` talks to the three servers over mutual TLS.

``Client`` is a thin facade; each job lives in its own module:

* ``client.transport``: one mTLS channel per server, parallel fan-out, agreed ``info()``;
* ``client.owner_ops``: ``register_model``, ``upload``, ``delete`` (features extracted
  locally, ``client.encryption`` of every copy, ``client.index_policy`` for the index
  update, one ``client.commit`` two-phase transaction per change);
* ``client.search``: one image, a list of images or a ``[Q, d]`` feature array is
  secret-shared, the servers run secure CNN + secure search on the whole batch in one
  session, the client reconstructs faiss-shaped ``(distances, ids)``;
* ``client.catalog``: the owner's local list of its images (``ls``; names never leave it);
* ``client.retrieval``: key shares sealed to this user's registered key, combined,
  decrypted and verified;
* ``client.acl_admin``: register users, grant, revoke, cross-check the audit logs;
  ``client.audit_view``: the owner's merged, filtered audit and the trace look-up;
* ``client.metadata``: names and labels, encrypted at upload; ``names`` reads them back for
  the owner and granted users (fetched per collection, so search results stay hidden).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import nn

from wire import bundle as bd
from wire.audit import Divergence
from wire.identity import PublicIdentity
from wire.signing import audience_for_ca, sign_request

from .acl_admin import AclAdmin
from .audit_view import OwnerAudit, owner_audit
from .catalog import ImageEntry
from .commit import PhaseHook
from .config import ClientConfig
from .errors import (
    MaliciousServerError,
    PartialCommitError,
    TriVaultError,
    TriVaultUnavailable,
    TriVaultWarning,
    UploadInterrupted,
)
from .identity import Identity
from .images import ImageInput
from .index_policy import IndexUpload
from .metadata import NameBook
from .owner_ops import OwnerOps
from .owner_state import OwnerState
from .recipes import DEFAULT_NPROBE, DEFAULT_PROJECTION
from .rekey import PendingRekeys, rekey, revoked_scope
from .retrieval import Retrieved, retrieve
from .search import QueryInput, SearchBatch, SearchResult, search
from .trace import trace_file
from .transport import Fanout
from .upload_batches import BATCH_IMAGES, BATCH_PIXELS, LazyImages
from .watermark import TraceResult

__all__ = ["Client", "ClientConfig", "ImageEntry", "MaliciousServerError", "PartialCommitError", "Retrieved",
           "SearchBatch", "SearchResult", "TriVaultError", "TriVaultUnavailable", "TriVaultWarning",
           "UploadInterrupted"]


def load_identity(identity: Identity | str | Path | None, passphrase: bytes | None, owner_dir: Path) -> Identity:
    """The user's keys: given, loaded from a directory, or ``owner_dir/identity`` (created if absent)."""
    if isinstance(identity, Identity):
        return identity
    d = Path(identity) if identity is not None else Path(owner_dir) / "identity"
    if (d / "identity.json").exists():
        return Identity.load(d, passphrase)
    if identity is not None:
        raise TriVaultError(f"no identity in {d}: create one with `trivault keys new`")
    ident = Identity.create()
    ident.save(d, passphrase)
    return ident


class Client:
    """SDK entry point: ``Client(config)`` where config is a ClientConfig or a TOML path.

    The SDK prints nothing; ``progress=True`` shows tqdm progress bars (on stderr) on long work."""

    def __init__(self, config: ClientConfig | str | Path, progress: bool = False,
                 identity: Identity | str | Path | None = None, passphrase: bytes | None = None) -> None:
        self.cfg = config if isinstance(config, ClientConfig) else ClientConfig.load(config)
        self.identity = load_identity(identity, passphrase, self.cfg.owner_dir)
        self.audience = audience_for_ca(Path(self.cfg.ca).read_bytes())
        self.fan = Fanout(self.cfg)
        self._stubs = self.fan.stubs
        self.owner = OwnerState(self.cfg.owner_dir)
        self.acl = AclAdmin(self.fan, self.sign, self.identity.public())
        self._owner_ops = OwnerOps(self.fan, self.sign, self.identity, self.owner, self.cfg.timeout_s)
        self._pending_rekeys = PendingRekeys(self.cfg.owner_dir)
        self.names = NameBook(self.fan, self.sign, self.identity, self.cfg.timeout_s)
        self.progress = progress

    def close(self) -> None:
        """Close the channels."""
        self.fan.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- state shared with the owner operations --------------------------------------
    @property
    def progress(self) -> bool:
        """Show progress bars on long work."""
        return self._owner_ops.progress

    @progress.setter
    def progress(self, value: bool) -> None:
        self._owner_ops.progress = bool(value)

    @property
    def fault_hook(self) -> PhaseHook | None:
        """Tests: called with ``before_prepare`` / ``after_prepare`` during a transaction (None: no-op)."""
        return self._owner_ops.fault_hook

    @fault_hook.setter
    def fault_hook(self, hook: PhaseHook | None) -> None:
        self._owner_ops.fault_hook = hook

    @property
    def last_upload_stats(self) -> dict[str, Any]:
        """Timings and sizes of the last upload."""
        return self._owner_ops.last_upload_stats

    # ---- signed requests and public state -------------------------------------------
    def sign(self, action: str, params: dict[str, Any]) -> bytes:
        """A signed request (Ed25519, fresh nonce and timestamp) for this deployment."""
        return sign_request(self.identity, action, params, self.audience).to_bytes()

    def info(self) -> dict[str, Any]:
        """Public state of the deployment; checks that the three servers agree."""
        return self.fan.info()

    # ---- access control and audit (client.acl_admin) -----------------------------------
    def _manage(self, action: str, params: dict[str, Any]) -> dict:
        return self.acl.manage(action, params)

    def register_user(self, user: PublicIdentity, attributes: dict[str, str] | None = None) -> str:
        """Owner: register a user's public identity with owner-attested attributes; returns its id."""
        return self.acl.register_user(user, attributes)

    def bootstrap(self) -> str:
        """First use of a deployment without ``owner_identity`` in its config: become its owner."""
        return self.acl.bootstrap()

    def grant(self, user_id: str, collection: str = "default", outcome: str = "ORIGINAL",
              expires: float | None = None, purposes: Sequence[str] | None = None, image_id: int | None = None,
              search: bool = True) -> None:
        """Owner: give ``user_id`` at least ``outcome`` on a collection (or one image) until ``expires``."""
        self.rekey_pending(strict=False)
        self.acl.grant(user_id, collection, outcome, expires, purposes, image_id, search)

    def revoke(self, user_id: str, collection: str = "default", image_id: int | None = None) -> None:
        """Owner: revoke every grant and membership of ``user_id`` (effective at the next key release).
        The images in scope are re-keyed at the owner's next upload/delete/grant or :meth:`rekey`."""
        self.acl.revoke(user_id, collection, image_id)
        self._pending_rekeys.add(revoked_scope(self._owner_ops.catalog.entries(), self.fan.info()["image_ids"],
                                               collection, image_id))

    def rekey(self, image_ids: Sequence[int] | None = None) -> list[int]:
        """Owner: new keys, ciphertexts and pixel shares for ``image_ids`` (default: those waiting
        since a revoke), so shares anyone kept from before open nothing stored; returns the ids."""
        ids = self._pending_rekeys.ids() if image_ids is None else [int(i) for i in image_ids]
        done = rekey(self, ids, self.progress)
        self._pending_rekeys.done(ids)
        return done

    def rekey_pending(self, strict: bool = True) -> None:
        """Re-key what a revoke left waiting (called at the start of every owner action). If that
        fails, a grant (``strict=False``) still goes ahead with a :class:`TriVaultWarning`; the list
        stays for the next action or ``trivault rekey``."""
        if not self._pending_rekeys.ids():
            return
        try:
            self.rekey()
        except TriVaultError as exc:
            if strict:
                raise
            warnings.warn(f"re-keying after a revoke failed ({exc}); it is retried at your next upload, delete "
                          "or grant, or by `trivault rekey`", TriVaultWarning, stacklevel=3)

    def trace(self, path: str | Path, image_id: int | None = None,
              candidates: Sequence[str] | None = None) -> TraceResult | None:
        """Owner: whom the servers released a leaked copy to (``client.trace``): ``TraceResult``
        (``user_id`` None if no candidate's mark is sure), or None if no image of yours matches."""
        return trace_file(self, path, image_id, candidates, self.progress)

    def audit_exports(self) -> dict[int, list[dict]]:
        """Each answering server's exported audit chain."""
        return self.acl.audit_exports()

    def audit(self) -> Divergence:
        """Fetch the three logs and compare them (``wire.audit.Divergence``: ok, suspects, summary)."""
        return self.acl.audit()

    def owner_audit(self) -> OwnerAudit:
        """Every entry touching this user's collections (and their own), from all three servers,
        merged and cross-checked (``client.audit_view``; filter with ``audit_view.select``)."""
        return owner_audit(self.acl.audit_exports())

    def image_names(self, ids: Sequence[int], collection: str = "default",
                    purpose: str | None = None) -> dict[int, str | None]:
        """Names of ``ids``: the local catalog, else the encrypted metadata of the whole collection."""
        out = {i: e.name for i, e in self._owner_ops.catalog.entries().items()}
        if any(out.get(int(i)) is None for i in ids):
            try:
                book = self.names.collection(collection, purpose)
            except TriVaultError:  # e.g. an unregistered user: ids only, the listing still works
                return out
            out.update({i: self.names.name(m) for i, m in book.items() if out.get(i) is None})
        return out

    def owner_identity(self) -> PublicIdentity:
        """The deployment owner's public identity, as at least two servers report it."""
        return self.acl.owner_identity()

    # ---- data owner (client.owner_ops) ------------------------------------------------
    def _transact(self, bundles: list[bd.Bundle], action: str = "upload", collection: str = "default") -> None:
        self._owner_ops.transact(bundles, action, collection)

    def _index_bundles(self, feats: np.ndarray, ids: np.ndarray, base_version: int,
                       new_feats: np.ndarray | None = None, new_ids: np.ndarray | None = None,
                       deletes: Sequence[int] = ()) -> IndexUpload:
        return self._owner_ops.index_bundles(feats, ids, base_version, new_feats, new_ids, deletes)

    def register_model(self, model: nn.Module, resolution: int | None = None) -> dict:
        """Split ``model`` into RSS weight pairs and register it on the three servers; returns its arch."""
        return self._owner_ops.register_model(model, resolution)

    def extract_features(self, images: Sequence[Image.Image], batch: int = 16) -> np.ndarray:
        """Owner-side plaintext features of decoded images with the registered model."""
        return self._owner_ops.extract_features(images, batch)

    def upload(self, images: Sequence[ImageInput], labels: Sequence[str] | None = None, deid: bool = False,
               eps: float = 1.0, collection: str = "default", batch_images: int = BATCH_IMAGES,
               batch_pixels: int = BATCH_PIXELS) -> list[int]:
        """Encrypt and upload images with their features' shares; returns the new image ids. Many
        images go in several transactions (``client.upload_batches``); ``UploadInterrupted`` says
        which were stored if one fails part-way."""
        self.rekey_pending()
        return self._owner_ops.upload(images, labels, deid, eps, collection, batch_images, batch_pixels)

    def delete(self, image_id: int) -> None:
        """Delete an image everywhere: ciphertexts, key shares and its index entry."""
        self.rekey_pending()
        self._owner_ops.delete(image_id)

    def reindex(self, projection: str = DEFAULT_PROJECTION) -> dict[str, Any]:
        """Owner: refit the PCA projection on every stored image (fetched back and decrypted here) and
        replace the model and all feature shares in one transaction; returns the new model recipe."""
        ids = sorted(int(i) for i in self.info()["image_ids"])
        return self._owner_ops.reindex(LazyImages(ids, lambda i: self.retrieve(int(i)).array()), ids, projection)

    # ---- querier (client.search, client.retrieval) ----------------------------------------
    def search(self, queries: QueryInput, k: int = 10, nprobe: int = DEFAULT_NPROBE, collection: str = "default",
               purpose: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Secure top-k search, faiss-style: ``(distances, ids)`` of shape ``[Q, k]``.

        ``queries``: one image (path, PIL image or HxWxC array), a list of images, or a
        ``[Q, d]`` float feature array (features of the registered model). All Q queries run
        in one secure session. Rows are sorted nearest first (squared L2); ``-1`` / ``inf``
        fill places with no (visible) result. k above the index's candidates widens nprobe,
        then returns what exists, with a :class:`TriVaultWarning`. With the servers in malicious
        mode, a server whose messages fail the servers' proof ends the search in
        :class:`MaliciousServerError` (the server pair that disagreed; no result released)."""
        b = self.search_batch(queries, k, nprobe, collection, purpose)
        return b.distances, b.ids

    def search_batch(self, queries: QueryInput, k: int = 10, nprobe: int = DEFAULT_NPROBE, collection: str = "default",
                     purpose: str | None = None) -> SearchBatch:
        """As :meth:`search`, with timing, per-server communication and the k/nprobe run."""
        return search(self.fan, self.sign, queries, k, nprobe, collection, purpose, self.cfg.timeout_s,
                      self.progress)

    def search_results(self, queries: QueryInput, k: int = 10, nprobe: int = DEFAULT_NPROBE,
                       collection: str = "default", purpose: str | None = None) -> list[SearchResult]:
        """As :meth:`search`, one :class:`SearchResult` per query (ids, distances, and the owner's
        labels from the local catalog; padding dropped)."""
        batch = self.search_batch(queries, k, nprobe, collection, purpose)
        names = self.image_names([int(i) for i in batch.ids.ravel() if i >= 0], collection, purpose)
        return batch.results(names.get)

    def ls(self, collection: str | None = None, local_only: bool = False) -> list[ImageEntry]:
        """The owner's images (id, name, collection, size), from the local catalog in ``owner_dir``.

        Unless ``local_only``, the list follows the servers' ids: images the servers hold
        but this owner directory does not know get their name from the encrypted metadata
        if the policy lets this user see them (``client.metadata``), else ``name=None``;
        images no longer on the servers are left out. Servers never see a name in clear."""
        known = self._owner_ops.catalog.entries()
        if local_only:
            entries = list(known.values())
        else:
            ids = self.fan.info()["image_ids"]
            names = self.image_names(ids, collection or "default", None) if any(i not in known for i in ids) else {}
            book = collection or "default"
            entries = [known.get(i) or ImageEntry(i, names.get(i), book if i in names else None, None) for i in ids]
        return sorted((e for e in entries if collection is None or e.collection == collection), key=lambda e: e.id)

    def retrieve(self, image_id: int, deid: bool = False, purpose: str | None = None) -> Retrieved:
        """Fetch, decrypt and verify an image the policy releases to this user.

        Each server evaluates the policy itself and seals its key-share pair to this user's
        REGISTERED X25519 key; a lying server is named (``KeyDeliveryError.suspects``), a
        tampered image raises ``TamperError``. A user who is not the owner only ever gets a
        copy the servers marked for them (``Retrieved.watermarked``; ``client.pixel_release``)."""
        got = retrieve(self.fan, self.sign, self.identity, self.owner_identity, image_id, deid, purpose,
                       self.cfg.timeout_s)
        if got.label is None:  # the id is no secret here: ask for this one image's name
            known = self._owner_ops.catalog.entries().get(int(image_id))
            try:
                got.label = known.name if known else self.names.name(self.names.image(image_id, purpose))
            except TriVaultError:
                got.label = None  # the image itself was released; its name is not essential
        return got
