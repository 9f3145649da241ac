"""Fan-out to the three servers: one mutual-TLS channel each, parallel calls, one clear error."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Literal, overload

import grpc

from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire import bundle as bd
from wire.proof_abort import combine_reports, parse_proof_abort
from wire.tls import channel_credentials, secure_channel

from .config import ClientConfig
from .errors import MaliciousServerError, TriVaultError, TriVaultUnavailable

Sign = Callable[[str, dict[str, Any]], bytes]  # (action, params) -> a signed request for this deployment


#: A server's error that only relays a peer's abort; the peer's own error names the cause.
RELAYED = " aborted the query"
#: How long, after the first error if it is such a relay, the client waits for the cause.
RELAY_GRACE_S = 2.0
#: How long, after a server reported a failed proof (malicious mode), the client waits for the
#: other servers' reports (honest servers reach their verdicts in the same round).
PROOF_GRACE_S = 5.0


def rpc_error(i: int, exc: grpc.RpcError) -> str:
    """``server i: CODE: details`` for an RPC error."""
    return f"server {i}: {exc.code().name}: {exc.details()}"


def is_unreachable(exc: grpc.RpcError) -> bool:
    """UNAVAILABLE raised by the transport (no connection, handshake refused), not a server's
    own ``UNAVAILABLE`` answer about its peers (those details start with ``server <i>:``)."""
    return not str(exc.details() or "").startswith("server ")


def proof_failure(proofs: dict[int, tuple[int, ...]], errs: list[str]) -> MaliciousServerError:
    """One :class:`MaliciousServerError` from the servers' failed-proof reports: a one-line summary (what
    the CLI prints), then every server's error on a line of its own."""
    blame = combine_reports(proofs)
    reporters = sorted(proofs)
    if len(blame) == 1 and len(reporters) == 1:
        who = f"server {blame[0]} deviated (server {reporters[0]}'s check names it)"
    elif len(blame) == 1:
        who = f"server {blame[0]} deviated (servers {' and '.join(map(str, reporters))} both suspect it)"
    else:
        who = f"servers {' and '.join(map(str, blame))} disagreed (one of them deviated)"
    return MaliciousServerError(f"the query was aborted by the servers' check of each other's messages: {who}; "
                                "no result was released\n" + "\n".join(sorted(errs)), blame, proofs)


class Fanout:
    """The three servers' stubs and a thread pool that calls them in parallel."""

    def __init__(self, cfg: ClientConfig) -> None:
        creds = channel_credentials(cfg.ca, cfg.cert, cfg.key)
        self.addresses = list(cfg.servers)
        self.channels = [secure_channel(a, creds) for a in cfg.servers]
        self.stubs = [pbg.VaultStub(c) for c in self.channels]
        self._pool = ThreadPoolExecutor(max_workers=9, thread_name_prefix="trivault-client")

    def close(self) -> None:
        """Close the channels and the pool."""
        for c in self.channels:
            c.close()
        self._pool.shutdown(wait=False)

    def all(self, fn: Callable[[int], Any], servers: Sequence[int] = (0, 1, 2), tolerate: bool = False,
            fail_fast: bool = True) -> list[Any]:
        """Run ``fn(i)`` for each server in parallel; raise one clear error on failure (at the first
        one, without waiting for slower servers, if ``fail_fast``; when every error so far only relays a
        peer's abort, up to ``RELAY_GRACE_S`` more for the peer's own reason) unless ``tolerate``.

        Transient ``UNAVAILABLE`` is retried by gRPC itself (``wire.options``); a server
        still unreachable after that raises :class:`TriVaultUnavailable` naming it and its
        address."""
        futs = {self._pool.submit(fn, i): i for i in servers}
        out: list[Any] = [None] * 3
        errs: list[str] = []
        down: dict[int, str] = {}
        proofs: dict[int, tuple[int, ...]] = {}  # server -> suspects of its failed proof (ABORTED)
        pending = set(futs)
        deadline: float | None = None
        while pending:
            timeout = None
            if proofs and not tolerate:  # wait for the other servers' verdicts (bounded)
                deadline = deadline or time.monotonic() + PROOF_GRACE_S
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
            elif errs and fail_fast and not tolerate:
                if not all(RELAYED in e for e in errs):
                    break  # a server's own reason is known: stop here
                # only "server j aborted the query" relays so far: give server j's own reason a moment
                deadline = deadline or time.monotonic() + RELAY_GRACE_S
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            for f in done:
                i = futs[f]
                try:
                    out[i] = f.result()
                except grpc.RpcError as exc:
                    errs.append(rpc_error(i, exc))
                    report = parse_proof_abort(str(exc.details() or ""))
                    if exc.code() == grpc.StatusCode.ABORTED and report is not None and report[0] == i:
                        if not proofs:
                            deadline = None  # the wait for the other verdicts starts at the first report
                        proofs[i] = report[1]
                    if exc.code() == grpc.StatusCode.UNAVAILABLE and is_unreachable(exc):
                        down[i] = self.addresses[i]
                except bd.BundleError as exc:
                    errs.append(f"server {i}: {exc}")
        if proofs and not tolerate:
            raise proof_failure(proofs, errs)
        if errs and not tolerate:
            if down:
                where = ", ".join(f"server {i} at {a}" for i, a in sorted(down.items()))
                raise TriVaultUnavailable(f"cannot reach {where} (UNAVAILABLE): " + "; ".join(sorted(errs)), down)
            raise TriVaultError("; ".join(sorted(errs)))
        return out

    @overload
    def infos(self, tolerate: Literal[False] = False) -> list[dict[str, Any]]: ...

    @overload
    def infos(self, tolerate: bool) -> list[dict[str, Any] | None]: ...

    def infos(self, tolerate: bool = False) -> list[dict[str, Any]] | list[dict[str, Any] | None]:
        """Each server's public state (None for a server that did not answer, if ``tolerate``)."""
        return self.all(lambda i: json.loads(self.stubs[i].Info(pb.InfoRequest(), timeout=10).meta_json),
                        tolerate=tolerate)

    def info(self) -> dict[str, Any]:
        """Public state of the deployment; checks that the three servers agree."""
        infos = self.infos()
        modes = [x.get("security", "semi_honest") for x in infos]  # (a server from before the setting)
        if len(set(modes)) != 1:
            each = ", ".join(f"server {i} {m}" for i, m in enumerate(modes))
            raise TriVaultError(f"the servers run different security modes ({each}): no query is sent; "
                                "the deployment must set the same [security] mode on all three")
        for key in ("index_version", "model_version", "image_ids"):
            vals = {json.dumps(x[key]) for x in infos}
            if len(vals) != 1:
                pend = {i: x["pending"] for i, x in enumerate(infos) if x["pending"]}
                raise TriVaultError(f"servers disagree on {key} (an upload is being recovered: {pend}); retry shortly")
        out = dict(infos[0])
        out["security"] = modes[0]
        out["pending"] = sorted({t for x in infos for t in x["pending"]})  # on any server
        return out
