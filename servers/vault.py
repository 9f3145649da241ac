"""The client-facing service: info, two-phase uploads, secure search, sealed retrieval.

Search in malicious mode (``[security] mode = "malicious"``, ``servers.config``): the request
must expect that mode (``meta["security"]``; a request without it expects ``"semi_honest"``),
else ``FAILED_PRECONDITION`` before any protocol message, so no server runs a different protocol
from its peers. The session keeps one ``protocols.dzk.ProductLog``; the checked query
(``servers.query.run_query``) and the checked masking record into it, and
``verify_products`` runs before the result pairs are streamed to the querier. Rounds: the checked
steps' (features input: ``checked_search.search_rounds``; hidden ids: ``checked_mask_hidden``'s; an
image: the checked CNN's) plus the final proof's ``2 R + 3`` per batch
(``dzk.check_cost``), reported to the client as ``comm["proof_rounds"]``. A failed proof
(``ProofRejected``) aborts the session here (the peers are told), and the client gets
``ABORTED`` with ``wire.proof_abort`` details: server ids only, no secrets, no result."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import grpc
import torch

from protocols.checked_search import checked_mask_hidden
from protocols.comm import CommError
from protocols.dzk import ProductLog, ProofRejected, verify_products
from protocols.party import Party
from protocols.sharing import SharePair, from_pair, output_pair
from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire import bundle as bd
from wire.key_delivery import seal_share
from wire.proof_abort import proof_abort_details
from wire.security_mode import MALICIOUS_IMAGE_QUERIES
from wire.tls import CLIENT_CN_PREFIX, caller_cn

from .acl import AclDenied
from .config import MALICIOUS_IMAGE_SESSIONS, MALICIOUS_MAX_IMAGE_SIDE
from .node import Node
from .owner_reads import audit_page, names
from .peer_comm import GrpcComm
from .policy import Outcome, PolicyError
from .query import LoadedIndex, LoadedModel, QueryError, mask_hidden, run_query
from .release import ReleaseError, marked_bundle, owns_image
from .request_auth import RequestRejected
from .storage import StorageError
from .txn import stage
from .txn_auth import TxnAuthError, check_decision, check_prepared_digest

log = logging.getLogger("trivault.vault")


def _json(o: object) -> str:
    return json.dumps(o)


@dataclass(frozen=True)
class SearchSession:
    """An admitted search: who asks, the query pair, what to run it on, and the ids to mask."""

    session_id: str
    who: str
    query: SharePair
    model: LoadedModel | None
    index: LoadedIndex
    k: int
    nprobe: int
    input_kind: str
    hidden: list[int]


MAX_K = 1000
MAX_QUERIES = 64  # queries in one search session


def query_problem(index: LoadedIndex, model: LoadedModel | None, input_kind: str, query: SharePair, k: int,
                  nprobe: int) -> str | None:
    """Why this search cannot run (public numbers only), or None. Checked at admission so a
    bad request gets INVALID_ARGUMENT with the numbers, never an internal error later."""
    n_c = int(index.meta.get("n_centroids", 1))
    bucket = int(index.meta.get("bucket_size", MAX_K))
    if not 1 <= k <= MAX_K or not 1 <= nprobe <= n_c:
        return f"k must be in [1, {MAX_K}] and nprobe in [1, {n_c}] (got k={k}, nprobe={nprobe})"
    if k > nprobe * bucket:
        return (f"k={k} is more than the {nprobe * bucket} candidates of nprobe={nprobe} bucket(s) of {bucket} "
                f"(the index has {n_c} buckets): lower k or raise nprobe")
    shape = list(query[0].shape)
    if input_kind == "features":
        dim = int(index.meta.get("dim", shape[-1] if shape else -1))
        if len(shape) != 2 or shape[1] != dim:
            return f"query features must be [Q, {dim}] (the index dimension), got {shape}"
    elif input_kind == "image":
        if model is None:
            return "no model registered: upload one with Client.register_model"
        want = list(model.arch["input_shape"])
        if len(shape) != 4:
            return f"query image shares must be [N, {', '.join(map(str, want))}], got {shape}"
        if shape[1:] != want:
            return f"query image shape {shape[1:]} does not match the model input {want}"
    else:
        return f"unknown query input {input_kind!r} (image or features)"
    if not 1 <= shape[0] <= MAX_QUERIES:
        return f"a search session takes 1 to {MAX_QUERIES} queries, got {shape[0]}"
    return None


def _checks_cnn(security: str, model: LoadedModel | None) -> bool:
    """Whether the query runs the checked CNN (malicious mode, an image query)."""
    return security == "malicious" and model is not None


def mode_problem(security: str, model: LoadedModel | None, queries: int = 1) -> str | None:
    """Why this server's mode cannot run the query (``model``: the image query's model, None for
    features; ``queries`` in the session), or None: in malicious mode a session takes
    ``MALICIOUS_IMAGE_QUERIES`` image queries (memory: ``wire.security_mode``) and the checked CNN model inputs up to
    ``MALICIOUS_MAX_IMAGE_SIDE`` px so far (the default model's; above it the proof would run for tens of minutes
    and hold more memory; docs/SECURITY.md)."""
    if security != "malicious" or model is None:
        return None
    if queries > MALICIOUS_IMAGE_QUERIES:
        return (f"malicious mode runs {MALICIOUS_IMAGE_QUERIES} image query per session (memory), got {queries}: "
                "send one session per image (the SDK does)")
    side = max(int(v) for v in model.arch["input_shape"][1:])
    if side <= MALICIOUS_MAX_IMAGE_SIDE:
        return None
    return (f"malicious mode runs the checked CNN on model inputs up to {MALICIOUS_MAX_IMAGE_SIDE} px so far "
            f"(this model takes {side} px; docs/SECURITY.md): query with features, or deploy in semi_honest mode")


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
                "model_version": mv, "arch": (mmeta or {}).get("arch"), "pending": s.pending_txns(),
                "owner": self._owner_bundle(), "security": self.node.cfg.security}
        return pb.Ack(ok=True, meta_json=_json(info))

    def _owner_bundle(self) -> dict | None:
        """The deployment owner's public identity (clients check image signatures against it)."""
        acl = self.node.acl
        admin = acl.admin()
        u = None if admin is None else acl.policies.user(admin)
        if u is None:
            return None
        return {"user_id": u.user_id, "sign_pub": u.sign_pub.hex(), "kex_pub": u.kex_pub.hex(), "attributes": {}}

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
            action = "delete" if b.meta.get("deletes") and not b.meta.get("images") else "upload"
            req = self.node.acl.verify(b.auth, action, who)
            acl = self.node.acl.check_txn(req, b.session_id, b.meta, "model" in b.meta)  # before any staging
            meta, files = stage(self.node.store, b)
            meta["acl"], meta["digests"] = acl, check_prepared_digest(req, self.node.id, b)
            self.node.store.prepare(b.session_id, meta, files)
        except (RequestRejected, AclDenied, TxnAuthError) as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"server {self.node.id}: {exc}")
        except (bd.BundleError, StorageError, ValueError, KeyError, TypeError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"upload refused: {exc}")
        log.info("txn %s prepared for %s: %d images, %d bytes, %.3f s", b.session_id, who, len(meta["images"]),
                 b.nbytes(), time.perf_counter() - t0)
        return pb.TxnReply(txn_id=b.session_id, state="prepared")

    def _decision(self, request: pb.TxnRequest, action: str, context: grpc.ServicerContext) -> None:
        """Check the owner's signed commit/abort (``servers.txn_auth``) and keep it as evidence."""
        who = self._client(context)
        if bytes(request.auth) and self.node.decisions.get(request.txn_id, action) == bytes(request.auth):
            return  # the same signed decision again (a retried call): applying it is idempotent
        try:
            check_decision(self.node.acl.verify, self.node.store, bytes(request.auth), action, request.txn_id, who)
        except (RequestRejected, TxnAuthError) as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"server {self.node.id}: {exc}")
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"server {self.node.id}: {exc}")
        self.node.decisions.record(request.txn_id, action, bytes(request.auth))  # before applying: crash-safe

    def Commit(self, request: pb.TxnRequest, context: grpc.ServicerContext) -> pb.TxnReply:
        """Phase 2: apply a prepared transaction the owner signed the commit of (idempotent)."""
        self._decision(request, "commit", context)
        try:
            state = self.node.store.commit(request.txn_id)
        except StorageError as exc:
            self.node.decisions.forget(request.txn_id, "commit")  # not applied: no evidence for the peers
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.info("txn %s committed", request.txn_id)
        return pb.TxnReply(txn_id=request.txn_id, state=state)

    def Abort(self, request: pb.TxnRequest, context: grpc.ServicerContext) -> pb.TxnReply:
        """Drop a prepared transaction (owner-signed abort)."""
        self._decision(request, "abort", context)
        try:
            state = self.node.store.abort(request.txn_id)
        except StorageError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.info("txn %s aborted (%s)", request.txn_id, state)
        return pb.TxnReply(txn_id=request.txn_id, state=state)

    # ---- search -------------------------------------------------------------------
    def Search(self, request_iterator, context: grpc.ServicerContext):
        """Run one secure query session with the two peers; stream back this server's result pairs."""
        session = self._admit(request_iterator, context)
        kind, outs, secs, stats = self._run(session, context)
        yield from self._encode(session, kind, outs, secs, stats)

    def _admit(self, request_iterator, context: grpc.ServicerContext) -> SearchSession:
        """Decode the request; check, on this server alone, who asks, what, and against which
        versions; take a session slot (released by :meth:`_run`). A refusal tells the peers."""
        who = self._client(context)
        try:
            b = bd.decode(request_iterator)
            uuid.UUID(b.session_id)
            query = bd.tensors_to_pair(b.tensors, "query")
        except (bd.BundleError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad search request: {exc}")
        node, m = self.node, b.meta

        def refuse(code: grpc.StatusCode, msg: str) -> NoReturn:
            for link in node.links.values():  # the peers stop waiting for this session at once
                link.send(pb.PeerMsg(session_id=b.session_id, sender=node.id, abort=True))
            node.router.close_session(b.session_id)  # and their messages for it are not buffered here
            context.abort(code, msg)
            raise AssertionError("context.abort returns only by raising")

        try:  # who asks, and may they search this collection? (checked here, independently per server)
            req = node.acl.verify(b.auth, "search", who)
            collection = node.acl.start_search(req, b.session_id, int(m.get("k", 10)))
            hidden = node.acl.hidden_ids(req, collection, node.store.image_ids())
        except (RequestRejected, AclDenied) as exc:
            refuse(grpc.StatusCode.PERMISSION_DENIED, f"server {node.id}: {exc}")
        want = m.get("security", "semi_honest")  # a client from before the setting expects semi-honest
        if want != node.cfg.security:
            refuse(grpc.StatusCode.FAILED_PRECONDITION,
                   f"server {node.id} runs in {node.cfg.security} mode but the request expects {want!r}: "
                   "the three servers must share one [security] mode")
        index = node.index()
        if index is None:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, "no images uploaded yet")
        if int(m.get("index_version", -1)) != index.version:
            refuse(grpc.StatusCode.FAILED_PRECONDITION,
                   f"index version mismatch (server {node.id} has {index.version}); refresh and retry")
        k, nprobe = int(m.get("k", 10)), int(m.get("nprobe", 1))
        problem = query_problem(index, node.model(), m.get("input", "image"), query, k, nprobe)
        if problem:
            refuse(grpc.StatusCode.INVALID_ARGUMENT, f"server {node.id}: {problem}")
        model = node.model() if m.get("input", "image") == "image" else None
        if model is not None and int(m.get("model_version", -1)) != model.version:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, f"model version mismatch on server {node.id}")
        problem = mode_problem(node.cfg.security, model, int(query[0].shape[0]))
        if problem:
            refuse(grpc.StatusCode.FAILED_PRECONDITION, f"server {node.id}: {problem}")
        if not node.sessions.acquire(blocking=False):
            refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, f"server {node.id} is running too many queries")
        if _checks_cnn(node.cfg.security, model) and not node.checked_images.acquire(blocking=False):
            node.sessions.release()
            refuse(grpc.StatusCode.RESOURCE_EXHAUSTED,
                   f"server {node.id} is running {MALICIOUS_IMAGE_SESSIONS} checked image queries (malicious mode, "
                   "memory): retry when it ends, or query with features")
        return SearchSession(b.session_id, who, query, model, index, k, nprobe, m.get("input", "image"), hidden)

    def _run(self, s: SearchSession, context: grpc.ServicerContext
             ) -> tuple[str, dict[str, SharePair], float, dict[str, int]]:
        """The secure query with the two peers, then the result masking; returns (result kind,
        output pairs, seconds, communication counters). Any failure aborts the peers too."""
        node, comm = self.node, None
        try:
            node.store.claim_session(s.session_id)
            keys = node.keys.keys().for_session(s.session_id)
            comm = self.make_comm(s.session_id)
            comm.wait_for_each_peer = node.cfg.security == "malicious"  # honest verdicts outlive an abort
            party = Party(comm, keys)
            t0 = time.perf_counter()
            proof = ProductLog(party) if node.cfg.security == "malicious" else None
            kind, outs = run_query(party, s.model, s.index, s.query, s.k, s.nprobe, s.input_kind, proof)
            if s.hidden:
                outs = self.mask_results(party, outs, s.hidden, proof)
            proof_rounds = None
            if proof is not None:  # every recorded message of the session is proved before any output leaves
                proof_rounds = verify_products(proof)
            secs = time.perf_counter() - t0
            comm.close()
        except (QueryError, StorageError) as exc:
            if comm is not None:
                comm.abort()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"query refused: {exc}")
        except ProofRejected as exc:  # a peer's messages failed the check: abort, release nothing
            if comm is not None:
                comm.abort()
            log.warning("session %s aborted: proof failed, suspects %s", s.session_id, list(exc.suspects))
            context.abort(grpc.StatusCode.ABORTED, proof_abort_details(node.id, str(exc), exc.suspects))
        except CommError as exc:
            if comm is not None:
                comm.abort()
            log.warning("session %s failed: %s", s.session_id, exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"server {node.id}: {exc}")
        except Exception as exc:
            if comm is not None:
                comm.abort()
            log.exception("session %s: internal error (%s)", s.session_id, type(exc).__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"server {node.id}: internal error {type(exc).__name__}")
        finally:
            if _checks_cnn(node.cfg.security, s.model):
                node.checked_images.release()
            node.sessions.release()
        assert comm is not None  # every path that leaves it None aborted above
        stats = comm.stats.as_dict()
        if proof_rounds is not None:  # malicious mode: the final proof's share of the rounds (public)
            stats["proof_rounds"] = proof_rounds
        log.info("session %s for %s done: %.3f s, %d rounds, %d bytes sent%s", s.session_id, s.who, secs,
                 stats["rounds"], stats["bytes_sent"], "" if proof_rounds is None else f", proved in {proof_rounds}")
        return kind, outs, secs, stats

    def make_comm(self, session_id: str) -> GrpcComm:
        """The session's links to the two peers (tests override it to inject message faults)."""
        node = self.node
        return GrpcComm(node.id, session_id, node.router, node.links, node.cfg.peer_timeout_s)

    def _encode(self, s: SearchSession, kind: str, outs: dict[str, SharePair], secs: float,
                stats: dict[str, int]) -> Iterator[pb.Frame]:
        """This server's result pairs and public timings as a streamed bundle."""
        tensors: dict[str, torch.Tensor] = {}
        for name, pair in outs.items():
            tensors.update(bd.pairs_to_tensors(name, pair))
        meta = {"result": kind, "seconds": secs, "comm": stats, "index_version": s.index.version}
        return bd.encode(bd.Bundle("result", s.session_id, meta, tensors))

    def mask_results(self, party: Party, outs: dict[str, SharePair], hidden: list[int],
                     proof: ProductLog | None = None) -> dict[str, SharePair]:
        """Replace the result ids the requester may not see by -1 (``servers.query.mask_hidden``:
        a protocol with the peers; its output is checked by the client's reconstruction). With
        ``proof`` (malicious mode) by checked gates recorded in it (``checked_mask_hidden``)."""
        ids = from_pair(party, outs["ids"], 0)
        dist = from_pair(party, outs["dist"], party.fp.frac_bits)
        ids, dist = mask_hidden(ids, dist, hidden) if proof is None else checked_mask_hidden(ids, dist, hidden, proof)
        return {"ids": output_pair(ids), "dist": output_pair(dist)}

    # ---- retrieval ----------------------------------------------------------------
    def key_share(self, image_id: int, deid: bool) -> tuple[bytes, SharePair]:
        """This server's ciphertext and key-share pair of one copy of an image."""
        ct, key = self.node.store.image_files(image_id, deid)
        return ct, (key["lo"], key["hi"])

    def Retrieve(self, request: pb.ImageRequest, context: grpc.ServicerContext):
        """To the image's owner: ciphertext + this server's key-share pair; to anyone else only its marked
        pixel-share pair (``servers.release``); both HPKE-sealed to the requester's REGISTERED key.

        The policy is evaluated here, at key-release time, from this server's own database:
        a revocation applied before this call stops the release even mid-session."""
        who = self._client(context)
        acl, image_id = self.node.acl, int(request.image_id)
        try:
            req = acl.verify(bytes(request.auth), "retrieve", who)
            if int(req.params.get("image_id", -1)) != image_id or bool(req.params.get("deid")) != bool(request.deid):
                raise acl.deny(req, "mismatch", "the signed request is for another image or copy", image=image_id)
            row = self.node.store.image_row(image_id)
            rel = acl.release(req, image_id, bool(request.deid), row["has_deid"])
            if rel.outcome == Outcome.NOTHING:
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"server {self.node.id}: policy refuses image {image_id} to this user")
            if not owns_image(acl, req.signer, image_id):  # anyone but the owner: marked pixel shares only
                yield from self._release_marked(req.signer, image_id, rel, row)
                return
            ct, pair = self.key_share(image_id, rel.deid)
            sealed = seal_share(pair, acl.kex_pub(req.signer), self.node.id, image_id, rel.deid)
            record = self.node.store.image_record(image_id, rel.deid)
        except ReleaseError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except (RequestRejected, AclDenied) as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"server {self.node.id}: {exc}")
        except StorageError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except (ValueError, PolicyError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.info("image %d released to %s (%s)", image_id, who, "deid" if rel.deid else "orig")
        tensors = {"ciphertext": torch.frombuffer(bytearray(ct), dtype=torch.uint8),
                   "sealed": torch.frombuffer(bytearray(sealed), dtype=torch.uint8)}
        if record:
            tensors["record"] = torch.frombuffer(bytearray(record), dtype=torch.uint8)
        meta = {"kind": "deid" if rel.deid else "orig", "outcome": rel.outcome.name}
        yield from bd.encode(bd.Bundle("image", "", meta, tensors))

    def _release_marked(self, recipient: str, image_id: int, rel, row: dict) -> Iterator[pb.Frame]:
        """This server's pixel-share pair with its two components of the recipient's mark, sealed to them."""
        meta = {"kind": "deid" if rel.deid else "orig", "outcome": rel.outcome.name}
        if row.get("label") is not None:  # (only where the server still keeps a plaintext label)
            meta["label"] = row["label"]
        out = marked_bundle(self.node.store, self.node.id, image_id, rel.deid, recipient,
                            self.node.acl.kex_pub(recipient), meta)
        log.info("image %d released marked to %s (%s)", image_id, recipient[:12], meta["kind"])
        return bd.encode(out)

    # ---- owner actions and audit ------------------------------------------------------
    def Manage(self, request: pb.SignedCall, context: grpc.ServicerContext) -> pb.Ack:
        """Apply a signed register / grant / revoke / policy request."""
        who = self._client(context)
        try:
            out = self.node.acl.manage(bytes(request.auth), who)
        except (RequestRejected, AclDenied) as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"server {self.node.id}: {exc}")
        return pb.Ack(ok=True, meta_json=_json(out))

    def Audit(self, request: pb.SignedCall, context: grpc.ServicerContext) -> pb.Ack:
        """One page of this server's audit chain as the signer may see it (``servers.owner_reads``)."""
        return self._signed_read(request, "audit", context, lambda req: audit_page(self.node.acl, req))

    def Names(self, request: pb.SignedCall, context: grpc.ServicerContext) -> pb.Ack:
        """Encrypted metadata + sealed metadata-key shares of the images the signer may see."""
        return self._signed_read(request, "names", context,
                                 lambda req: names(self.node.acl, self.node.store, req))

    def _signed_read(self, request: pb.SignedCall, action: str, context: grpc.ServicerContext, read) -> pb.Ack:
        who = self._client(context)
        try:
            out = read(self.node.acl.verify(bytes(request.auth), action, who))
        except (RequestRejected, AclDenied, PolicyError) as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"server {self.node.id}: {exc}")
        except (StorageError, ValueError, TypeError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"server {self.node.id}: {exc}")
        return pb.Ack(ok=True, meta_json=_json(out))
