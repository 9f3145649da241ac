"""A server's runtime state: config, store, peer links, pairwise keys, caches, recovery."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc

from protos.trivault.v1 import trivault_pb2 as pb
from wire.signing import audience_for_ca
from wire.tls import channel_credentials

from .acl import Acl
from .config import MALICIOUS_IMAGE_SESSIONS, ServerConfig
from .peer_comm import AioLoop, PeerLink, PeerRouter
from .peer_keys import PeerKeys, load_or_create_x25519
from .query import LoadedIndex, LoadedModel
from .storage import StorageError, Store
from .txn_auth import TxnDecisions, valid_commit_evidence

log = logging.getLogger("trivault.server")


class Node:
    """Everything the servicers of one server share."""

    def __init__(self, cfg: ServerConfig, txn_timeout_s: float = 60.0, acl_class: type[Acl] = Acl) -> None:
        self.cfg = cfg
        self.id = cfg.server_id
        self.store = Store(cfg.data_dir)
        self.acl = acl_class(cfg.data_dir, self.id, audience_for_ca(Path(cfg.ca).read_bytes()), cfg.owner_identity)
        self.store.on_commit = self.acl.apply_commit
        self.decisions = TxnDecisions(cfg.data_dir / "txn_decisions.db")
        self.router = PeerRouter()
        creds = channel_credentials(cfg.ca, cfg.cert, cfg.key)
        self.aio = AioLoop()
        self.links = {j: PeerLink(self.id, j, cfg.peers[j], creds, self.router, self.aio)
                      for j in cfg.peers if j != self.id}
        self.sk = load_or_create_x25519(cfg.data_dir / "x25519.key")
        self.keys = PeerKeys(self.id, self.sk, self.links, self.router)
        self.sessions = threading.BoundedSemaphore(cfg.max_sessions)
        self.checked_images = threading.BoundedSemaphore(MALICIOUS_IMAGE_SESSIONS)  # malicious mode's memory
        self.txn_timeout_s = txn_timeout_s
        self._cache_lock = threading.Lock()
        self._model: LoadedModel | None = None
        self._index: LoadedIndex | None = None
        self.shard_pool = None
        self._stop = threading.Event()
        self._recovery = threading.Thread(target=self._recover_loop, name="txn-recovery", daemon=True)
        self.shard_pool = self._start_shards(cfg)

    def _start_shards(self, cfg: ServerConfig):
        """With ``[shards]``: this server's Ray cluster and its actors, bound to the current index now
        and to every newly committed index version (so no query waits for actors to start)."""
        if not cfg.shard_workers:
            return None
        from .shards import ShardPool

        pool = ShardPool(self.id, cfg.shard_workers, cfg.ray_address, cfg.shard_timeout_s,
                         worker_cpus=cfg.shard_worker_cpus).start()
        on_commit = self.store.on_commit

        def bind_after_commit(meta: dict) -> None:
            on_commit(meta)
            if "index" in meta:
                try:
                    self.index()
                except Exception as exc:  # noqa: BLE001 - committed already; the next query binds again
                    log.warning("shards not bound to the new index yet: %s", exc)

        self.store.on_commit = bind_after_commit
        self.shard_pool = pool
        self.index()
        return pool

    def start(self) -> None:
        """Start background transaction recovery."""
        self._recovery.start()

    def stop(self) -> None:
        """Stop background work and close links and the store."""
        self._stop.set()
        for link in self.links.values():
            link.close()
        self.aio.stop()
        if self.shard_pool is not None:
            self.shard_pool.shutdown()
        self.store.close()
        self.acl.close()
        self.decisions.close()

    # ---- cached model/index --------------------------------------------------------
    def model(self) -> LoadedModel | None:
        """The current model (loaded once per version)."""
        version, meta = self.store.current("model")
        if version == 0:
            return None
        with self._cache_lock:
            if self._model is None or self._model.version != version:
                if meta is None:
                    raise StorageError(f"model version {version} has no metadata")
                t = self.store.load_tensors("model", version)
                names = sorted({k.rsplit(".", 1)[0] for k in t})
                self._model = LoadedModel(version, meta["arch"], {n: (t[f"{n}.lo"], t[f"{n}.hi"]) for n in names})
            return self._model

    def index(self) -> LoadedIndex | None:
        """The current index (loaded once per version)."""
        version, meta = self.store.current("index")
        if version == 0:
            return None
        with self._cache_lock:
            if self._index is None or self._index.version != version:
                if meta is None:
                    raise StorageError(f"index version {version} has no metadata")
                self._index = self._load_index(version, meta)
            return self._index

    def _load_index(self, version: int, meta: dict) -> LoadedIndex:
        """In process: every tensor. Sharded: the actors map the buckets; this driver keeps the sizes."""
        if self.shard_pool is None:
            return LoadedIndex(version, meta, self.store.load_tensors("index", version))
        from .sharded_search import ShardedIndex

        sharded = ShardedIndex.open(self.shard_pool, self.store.objects / "index", version)
        return LoadedIndex(version, meta, sharded.tensors(), shards=sharded)

    # ---- two-phase commit recovery -------------------------------------------------
    def _recover_loop(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                self.recover(force=first)
            except Exception as exc:  # noqa: BLE001 - keep the loop alive
                log.warning("recovery pass failed: %s", type(exc).__name__)
            first = False
            self._stop.wait(2.0)

    def recover(self, force: bool = False) -> None:
        """Decide stale prepared transactions: server 0 is the decision point.

        A transaction is committed iff server 0 committed it, and only on the owner's signed
        commit (``servers.txn_auth``): a server that missed it commits once it holds that
        signed commit itself or gets it from a peer (``TxnStatus`` evidence). Server 0 aborts
        a prepared transaction nobody committed within ``txn_timeout_s``; servers 1 and 2
        follow server 0's abort (on start-up at once, afterwards once the timeout passed).
        """
        for txn in self.store.pending_txns():
            created = self.store.txn_created(txn)
            age = 0.0 if created is None else time.time() - created
            if (force or age >= self.txn_timeout_s / 4) and self._commit_on_evidence(txn):
                continue
            if self.id == 0:
                if age > self.txn_timeout_s:
                    self.store.abort(txn)
                    log.info("txn %s aborted after %.0f s without commit", txn, age)
                continue
            if not force and age < self.txn_timeout_s / 4:
                continue
            try:
                rep = self.links[0].stub.TxnStatus(pb.TxnRequest(txn_id=txn), timeout=5.0)
            except grpc.RpcError:
                continue
            try:
                if rep.state == "committed":
                    log.warning("txn %s: server 0 reports committed without a valid owner signature", txn)
                elif rep.state in ("aborted", "unknown") and (age > self.txn_timeout_s or rep.state == "aborted"):
                    self.store.abort(txn)
                    log.info("txn %s aborted by recovery (server 0: %s)", txn, rep.state)
            except StorageError as exc:
                log.warning("txn %s recovery: %s", txn, exc)

    def _commit_on_evidence(self, txn: str) -> bool:
        """Commit ``txn`` if this server or a peer holds the owner's signed commit of it."""
        for source in [None, *sorted(self.links)]:
            if source is None:
                auth = self.decisions.get(txn)
            else:
                try:
                    auth = bytes(self.links[source].stub.TxnStatus(pb.TxnRequest(txn_id=txn), timeout=2.0).auth)
                except grpc.RpcError:
                    continue
            if valid_commit_evidence(self.acl.verifier, self.store, txn, auth):
                self.decisions.record(txn, "commit", auth)
                try:
                    self.store.commit(txn)
                except StorageError as exc:
                    log.warning("txn %s recovery: %s", txn, exc)
                    return False
                log.info("txn %s committed by recovery (signed commit from %s)", txn,
                         "here" if source is None else f"server {source}")
                return True
        return False
