"""Issue 14, retrieval step: server 1 corrupts what it releases at retrieval (``ret-KIND`` of
tests/integration/faulty_server.py), for the owner (sealed key-share pairs) and for a granted
user who is not the owner (sealed, marked pixel-share pairs). Never a wrong image: ``add``,
``flip``, ``replay`` and ``foreign`` end in an error naming server 1 (or a pair containing
it); ``drop`` (server 1 refuses) gives the correct image from the two other servers, and
the result says server 1 was not used.
(Counts over several runs: ``python -m benchmarks.security --steps retrieve``.)"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from client.identity import Identity
from client.sdk import Client
from protos.trivault.v1 import trivault_pb2 as pb
from wire.key_delivery import KeyDeliveryError
from wire.pixel_shares import PixelShareError

from .conftest import make_cluster

FAULTY_SERVER = [sys.executable, str(Path(__file__).with_name("faulty_server.py"))]
KINDS = ("add", "flip", "drop", "replay", "foreign")
TARGET, DECOY = 5, 2  # the image retrieved; the previous request's image (replay / foreign re-send it)
# what the requester's checks report: owner (key shares), grantee (pixel shares)
EXPECTED = {"add": ("inconsistent key shares", "disagree on pixel share"),
            "flip": ("inconsistent key shares", "disagree on pixel share"),
            "replay": ("failed authentication", "failed authentication"),
            "foreign": ("inconsistent key shares", "disagree on pixel share")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A cluster of its own: server 1 is restarted as a corrupted server."""
    yield from make_cluster(tmp_path_factory)


@pytest.fixture(scope="module")
def grantee(cluster) -> Identity:
    """A registered user granted ORIGINAL on the default collection (not the owner)."""
    ident = Identity.create()
    with Client(cluster.client_config, progress=False) as owner:
        owner.register_user(ident.public(), {"role": "doctor"})
        owner.grant(ident.user_id, outcome="ORIGINAL")
    return ident


@pytest.fixture(scope="module")
def honest(cluster, grantee) -> dict[str, bytes]:
    """Each requester's image from the honest servers (the owner's is the uploaded file)."""
    out = {}
    for who, ident in (("owner", None), ("grantee", grantee)):
        with Client(cluster.client_config, progress=False, identity=ident) as c:
            got = c.retrieve(TARGET)
        assert got.watermarked == (who == "grantee")
        out[who] = got.data
    with Client(cluster.client_config, progress=False) as c:
        assert np.array_equal(c.retrieve(TARGET).array(), cluster.images[TARGET])
    return out


def _restart(cluster, fault: str | None) -> None:
    cluster.kill(1)
    if fault is None:
        cluster.commands.pop(1, None)
    else:
        cluster.commands[1] = FAULTY_SERVER + [fault]
    cluster.start(1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupted_release_is_named_never_a_wrong_image(cluster, grantee, honest, kind):
    _restart(cluster, f"ret-{kind}")
    for n, (who, ident) in enumerate((("owner", None), ("grantee", grantee))):
        with Client(cluster.client_config, progress=False, identity=ident) as c:
            if kind in ("replay", "foreign"):  # server 1's previous request, of another image
                with contextlib.suppress(KeyDeliveryError, PixelShareError):  # (it gets the answer before it)
                    c.retrieve(DECOY)
            if kind == "drop":
                r = c.retrieve(TARGET)
                assert r.data == honest[who]  # from servers 0 and 2
                assert list(r.unused) == [1] and "server 1" in r.unused[1], r.unused  # the refusal is reported
                auth = c.sign("retrieve", {"image_id": TARGET, "deid": False, "purpose": None})
                with pytest.raises(grpc.RpcError) as rpc:  # (server 1 did refuse)
                    list(c._stubs[1].Retrieve(pb.ImageRequest(image_id=TARGET, auth=auth), timeout=10))
                assert rpc.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "server 1" in (rpc.value.details() or "")
                continue
            with pytest.raises((KeyDeliveryError, PixelShareError)) as e:
                got = c.retrieve(TARGET)
                assert got.data == honest[who], "a wrong image without an error"
            assert EXPECTED[kind][n] in str(e.value), e.value
            assert isinstance(e.value, KeyDeliveryError if who == "owner" else PixelShareError)
            assert 1 in e.value.suspects, (e.value, e.value.suspects)
    if kind == KINDS[-1]:
        _restart(cluster, None)
