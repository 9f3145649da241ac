"""The client-facing service: info, two-phase uploads, secure search, sealed retrieval."""

from __future__ import annotations

import json
import logging
import time
import uuid

import grpc
import torch

from client.crypto import seal, seal_info
from protocols.comm import CommError
from protocols.party import Party
from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg

from . import bundle as bd
from .node import Node
from .peer_comm import GrpcComm
from .query import QueryError, run_query
from .storage import StorageError, tensors_to_npz
from .tls import CLIENT_CN_PREFIX, caller_cn
from .txn import stage

log = logging.getLogger("trivault.vault")


def _json(o: object) -> str:
    return json.dumps(o)


class VaultServicer(pbg.VaultServicer):
    """Requires a client certificate from the deployment CA (checked by TLS and CN)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def _client(self, context: grpc.ServicerContext) -> str:
        cn = caller_cn(context)
        if not cn.startswith(CLIENT_CN_PREFIX):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "a client certificate is required")
        return cn

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.Ack:
        """Public state: ids, versions, arch, index meta, pending transactions."""
        self._client(context)
        s = self.node.store
        iv, imeta = s.current("index")
        mv, mmeta = s.current("model")
        info = {"server_id": self.node.id, "image_ids": s.image_ids(), "index_version": iv, "index_meta": imeta,
                "model_version": mv, "arch": (mmeta or {}).get("arch"), "pending": s.pending_txns()}
        return pb.Ack(ok=True, meta_json=_json(info))

    # ---- uploads ------------------------------------------------------------------
    def Prepare(self, request_iterator, context: grpc.ServicerContext) -> pb.TxnReply:
        """Phase 1: validate, stage and fsync a transaction; vote yes."""
        who = self._client(context)
        t0 = time.perf_counter()
        try:
            b = bd.decode(request_iterator)
            if b.kind != "txn":
                raise bd.BundleError(f"expected a txn bundle, got {b.kind!r}")
            uuid.UUID(b.session_id)
            meta, files = stage(self.node.store, b)
            self.node.store.prepare(b.session_id, meta, files)
        except (bd.BundleError, StorageError, ValueError, KeyError, TypeError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"upload refused: {exc}")
        n = len(meta["images"])
        self.node.store.audit("prepare", b.session_id, client=who, images=n, bytes=b.nbytes())
        log.info("txn %s prepared: %d images, %d bytes, %.3f s", b.session_id, n, b.nbytes(), time.perf_counter() - t0)
        return pb.TxnReply(txn_id=b.session_id, state="prepared")

    def Commit(self, request: pb.TxnRequest, context: grpc.ServicerContext) -> pb.TxnReply:
        """Phase 2: apply a prepared transaction (idempotent)."""
        self._client(context)
        try:
            state = self.node.store.commit(request.txn_id)
        except StorageError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        self.node.store.audit("commit", request.txn_id)
        log.info("txn %s committed", request.txn_id)
        return pb.TxnReply(txn_id=request.txn_id, state=state)

    def Abort(self, request: pb.TxnRequest, context: grpc.ServicerContext) -> pb.TxnReply:
        """Drop a prepared transaction."""
        self._client(context)
        try:
            state = self.node.store.abort(request.txn_id)
        except StorageError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        self.node.store.audit("abort", request.txn_id)
        return pb.TxnReply(txn_id=request.txn_id, state=state)

    # ---- search -------------------------------------------------------------------
    def Search(self, request_iterator, context: grpc.ServicerContext):
        """Run one secure query session with the two peers; stream back this server's result pairs."""
        who = self._client(context)
        try:
            b = bd.decode(request_iterator)
            uuid.UUID(b.session_id)
            query = bd.tensors_to_pair(b.tensors, "query")
        except (bd.BundleError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad search request: {exc}")
        node, m = self.node, b.meta

        def refuse(code: grpc.StatusCode, msg: str) -> None:
            for link in node.links.values():  # the peers stop waiting for this session at once
                link.send(pb.PeerMsg(session_id=b.session_id, sender=node.id, abort=True))
            context.abort(code, msg)

        index = node.index()
        if index is None:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, "no images uploaded yet")
        if int(m.get("index_version", -1)) != index.version:
            refuse(grpc.StatusCode.FAILED_PRECONDITION,
                   f"index version mismatch (server {node.id} has {index.version}); refresh and retry")
        k, nprobe = int(m.get("k", 10)), int(m.get("nprobe", 1))
        if not 1 <= k <= 1000 or not 1 <= nprobe <= int(index.meta.get("n_centroids", 1)):
            refuse(grpc.StatusCode.INVALID_ARGUMENT,
                   f"k must be in [1, 1000] and nprobe in [1, {index.meta.get('n_centroids', 1)}]")
        model = node.model() if m.get("input", "image") == "image" else None
        if model is not None and int(m.get("model_version", -1)) != model.version:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, f"model version mismatch on server {node.id}")
        if not node.sessions.acquire(blocking=False):
            refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, f"server {node.id} is running too many queries")
        comm = None
        try:
            node.store.claim_session(b.session_id)
            keys = node.keys.keys().for_session(b.session_id)
            comm = GrpcComm(node.id, b.session_id, node.router, node.links, node.cfg.peer_timeout_s)
            party = Party(comm, keys)
            t0 = time.perf_counter()
            kind, outs = run_query(party, model, index, query, k, nprobe, m.get("input", "image"))
            secs = time.perf_counter() - t0
            comm.close()
        except (QueryError, StorageError) as exc:
            if comm is not None:
                comm.abort()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"query refused: {exc}")
        except CommError as exc:
            if comm is not None:
                comm.abort()
            log.warning("session %s failed: %s", b.session_id, exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"server {node.id}: {exc}")
        except Exception as exc:  # noqa: BLE001 - report, never hang the peers
            if comm is not None:
                comm.abort()
            log.exception("session %s: internal error (%s)", b.session_id, type(exc).__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"server {node.id}: internal error {type(exc).__name__}")
        finally:
            node.sessions.release()
        stats = comm.stats.as_dict()
        node.store.audit("search", b.session_id, client=who, seconds=round(secs, 4), **stats)
        log.info("session %s done: %.3f s, %d rounds, %d bytes sent", b.session_id, secs, stats["rounds"],
                 stats["bytes_sent"])
        tensors = {}
        for name, pair in outs.items():
            tensors.update(bd.pairs_to_tensors(name, pair))
        meta = {"result": kind, "seconds": secs, "comm": stats, "index_version": index.version}
        if kind == "distances":
            tensors["ids"] = index.tensors["ids"]
        yield from bd.encode(bd.Bundle("result", b.session_id, meta, tensors))

    # ---- retrieval ----------------------------------------------------------------
    def Retrieve(self, request: pb.ImageRequest, context: grpc.ServicerContext):
        """Ciphertext + this server's key-share pair sealed to the client's X25519 key."""
        who = self._client(context)
        try:
            ct, key = self.node.store.image_files(int(request.image_id), bool(request.deid))
            row = self.node.store.image_row(int(request.image_id))
            sealed = seal(bytes(request.client_public_key), tensors_to_npz(key),
                          seal_info(self.node.id, int(request.image_id), bool(request.deid)))
        except StorageError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self.node.store.audit("retrieve", str(request.image_id), client=who, deid=bool(request.deid))
        tensors = {"ciphertext": torch.frombuffer(bytearray(ct), dtype=torch.uint8),
                   "sealed": torch.frombuffer(bytearray(sealed), dtype=torch.uint8)}
        yield from bd.encode(bd.Bundle("image", "", {"label": row["label"]}, tensors))
