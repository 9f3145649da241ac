"""Two-phase commit of one upload/delete/model transaction on the three servers.

Prepare on all three (each validates, stages and fsyncs, and votes); then commit on
server 0, whose state is the decision; then on servers 1 and 2. Every phase carries the
owner's signature over the transaction id and the three bundle digests
(``wire.txn_digest``): a server stages only the bundle the owner signed and applies only a
commit or abort the owner signed (``servers.txn_auth``). A server that misses the commit
completes it by itself when it is back, on the owner's signed commit that server 0 (or the
other peer) hands over (``servers.node``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from protos.trivault.v1 import trivault_pb2 as pb
from wire import bundle as bd
from wire.txn_digest import txn_digests

from .errors import PartialCommitError, TriVaultError
from .transport import Fanout, Sign, rpc_error

PhaseHook = Callable[[str], None]


def transaction_auth(sign: Sign, bundle: bd.Bundle, action: str, collection: str, digests: list[str]) -> bytes:
    """The owner's one signed request naming the transaction, its image ids, deletions, model
    flag and the three bundle digests; each server checks it against what it staged before voting."""
    m = bundle.meta
    return sign(action, {"txn": bundle.session_id, "collection": collection, "model": "model" in m,
                         "images": [int(im["id"]) for im in m.get("images", [])],
                         "deletes": [int(i) for i in m.get("deletes", [])], "digests": digests})


def decision(sign: Sign, txn: str, action: str, digests: list[str]) -> pb.TxnRequest:
    """The owner's signed ``commit`` or ``abort`` of transaction ``txn`` (one request per server:
    each server remembers nonces, and the same bytes twice would be a replay)."""
    return pb.TxnRequest(txn_id=txn, auth=sign(action, {"txn": txn, "digests": digests}))


def transact(fan: Fanout, sign: Sign, bundles: Sequence[bd.Bundle], action: str = "upload",
             collection: str = "default", timeout_s: float = 60.0, hook: PhaseHook | None = None) -> None:
    """Prepare ``bundles[i]`` on server ``i``, then commit (server 0 first). ``hook`` (tests)
    is called with ``"before_prepare"`` and ``"after_prepare"``."""
    txn = bundles[0].session_id
    digests = txn_digests(bundles)
    auth = transaction_auth(sign, bundles[0], action, collection, digests)
    for b in bundles:
        b.auth = auth
    if hook is not None:
        hook("before_prepare")
    try:
        fan.all(lambda i: fan.stubs[i].Prepare(bd.encode(bundles[i]), timeout=timeout_s * 10), fail_fast=False)
    except TriVaultError as exc:
        _abort(fan, sign, txn, digests, (0, 1, 2))
        raise TriVaultError(f"upload aborted, nothing stored: {exc}") from None
    if hook is not None:
        hook("after_prepare")
    _commit_decision(fan, sign, txn, digests)
    commits = {i: decision(sign, txn, "commit", digests) for i in (1, 2)}
    try:
        fan.all(lambda i: fan.stubs[i].Commit(commits[i], timeout=30), servers=(1, 2))
    except TriVaultError as exc:
        raise PartialCommitError(
            f"upload committed by server 0; {exc}; that server completes it when it is back") from exc


def _commit_decision(fan: Fanout, sign: Sign, txn: str, digests: list[str]) -> None:
    """Commit on server 0 (the decision point); a refusal there aborts servers 1 and 2."""
    try:
        fan.stubs[0].Commit(decision(sign, txn, "commit", digests), timeout=30)
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED):
            _abort(fan, sign, txn, digests, (1, 2))  # server 0 refused: the decision is abort
            raise TriVaultError(f"upload not committed ({rpc_error(0, exc)}); nothing stored") from None
        # Server 0 may or may not have committed before failing: servers 1 and 2 follow
        # whatever it decided once it is back (never abort them here).
        raise TriVaultError(f"upload outcome unknown ({rpc_error(0, exc)}): servers 1 and 2 follow server "
                            f"0's decision when it is back; retry the upload after checking info()") from None


def _abort(fan: Fanout, sign: Sign, txn: str, digests: list[str], servers: Sequence[int]) -> None:
    aborts = {i: decision(sign, txn, "abort", digests) for i in servers}
    fan.all(lambda i: fan.stubs[i].Abort(aborts[i], timeout=10), servers=servers, tolerate=True)
