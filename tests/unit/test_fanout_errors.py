"""Fanout.all's error choice: a peer's "server j aborted the query" relay waits briefly for
server j's own reason, which then appears in the error (real threads, real timing)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from client.errors import TriVaultError
from client.transport import RELAY_GRACE_S, Fanout


class _Rpc(grpc.RpcError):
    def __init__(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


def _fanout() -> Fanout:
    f = Fanout.__new__(Fanout)  # no channels: fn below stands for the three RPCs
    f.addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    f._pool = ThreadPoolExecutor(max_workers=3)
    return f


def test_a_relay_waits_for_the_cause_and_names_it():
    def fn(i: int) -> None:
        if i == 0:
            raise _Rpc("server 0: session s: server 2 aborted the query")
        time.sleep(0.3)
        if i == 2:
            raise _Rpc("server 2: session s: server 1 sent message 7 twice")

    with pytest.raises(TriVaultError, match="server 1 sent message 7 twice"):
        _fanout().all(fn)


def test_an_own_reason_stops_at_once_and_a_lone_relay_waits_at_most_the_grace():
    def own(i: int) -> None:
        if i == 0:
            raise _Rpc("server 0: bad request")
        time.sleep(5)

    t0 = time.monotonic()
    with pytest.raises(TriVaultError, match="bad request"):
        _fanout().all(own)
    assert time.monotonic() - t0 < 1.0

    def relay(i: int) -> None:
        if i == 0:
            raise _Rpc("server 0: session s: server 2 aborted the query")
        time.sleep(RELAY_GRACE_S + 3)

    t0 = time.monotonic()
    with pytest.raises(TriVaultError, match="server 2 aborted the query"):
        _fanout().all(relay)
    assert RELAY_GRACE_S - 0.1 < time.monotonic() - t0 < RELAY_GRACE_S + 1.5
