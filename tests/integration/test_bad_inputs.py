"""Bad input gets a clear error and loses nothing stored (runs against the shared cluster)."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
import torch

from client.certs import make_deployment
from client.sdk import Client, ClientConfig, TriVaultError
from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire import bundle as bd
from wire.tls import channel_credentials


def _unchanged(c: Client, before: dict) -> None:
    after = c.info()
    assert after["image_ids"] == before["image_ids"] and after["index_version"] == before["index_version"]
    assert after["pending"] == []


def test_non_image_and_truncated_image_are_refused(cluster, client, tmp_path):
    before = client.info()
    txt = tmp_path / "notes.png"
    txt.write_text("this is not an image")
    with pytest.raises(ValueError, match="not an image"):
        client.upload([txt])
    from PIL import Image

    good = tmp_path / "good.jpg"
    Image.fromarray(cluster.images[0]).save(good, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        client.upload([good, cut])
    _unchanged(client, before)


def _raw_stub(cluster, i: int, options=None) -> pbg.VaultStub:
    c, k = cluster.certs.client("owner")
    creds = channel_credentials(cluster.certs.ca, c, k)
    ch = grpc.secure_channel(f"127.0.0.1:{cluster.ports[i]}", creds, options=options or [])
    return pbg.VaultStub(ch)


def test_wrong_shaped_share_upload_is_refused(cluster, client):
    before = client.info()
    txn = str(uuid.uuid4())
    bad = bd.Bundle("txn", txn, {"images": [{"id": 1000}], "index": {"format": "ivf"}},
                    {"img/1000": torch.zeros(64, dtype=torch.uint8), "key/1000.lo": torch.zeros(3, dtype=torch.int64),
                     "key/1000.hi": torch.zeros(3, dtype=torch.int64)},
                    client.sign("upload", {"txn": txn, "images": [1000], "deletes": [], "model": False}))
    with pytest.raises(grpc.RpcError) as e:
        _raw_stub(cluster, 1).Prepare(bd.encode(bad), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "4 int64 words" in e.value.details()
    # A query share of the wrong shape is refused too, by every server.
    info = client.info()
    sid = str(uuid.uuid4())
    q = bd.Bundle("search", sid, {"k": 1, "index_version": info["index_version"],
                                  "model_version": info["model_version"]},
                  bd.pairs_to_tensors("query", (torch.zeros(1, 3, 5, 5, dtype=torch.int64),) * 2),
                  client.sign("search", {"session": sid, "k": 1}))
    with pytest.raises(grpc.RpcError) as e:
        list(_raw_stub(cluster, 0).Search(bd.encode(q), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not match the model input" in e.value.details()
    _unchanged(client, before)


def test_unknown_image_id(client):
    with pytest.raises(TriVaultError, match="unknown image id 4242"):
        client.retrieve(4242)
    with pytest.raises(TriVaultError, match="unknown image id"):
        client.delete(4242)


def test_client_without_valid_certificate_is_refused(cluster, client, tmp_path):
    before = client.info()
    rogue = make_deployment(tmp_path / "rogue")  # a different CA
    c, k = rogue.client("owner")
    bad = Client(ClientConfig([f"127.0.0.1:{p}" for p in cluster.ports], cluster.certs.ca, c, k,
                              tmp_path / "owner", timeout_s=5), progress=False)
    with pytest.raises(TriVaultError, match="UNAVAILABLE"):
        bad.info()
    bad.close()
    # Plaintext (no TLS) is refused as well.
    ch = grpc.insecure_channel(f"127.0.0.1:{cluster.ports[0]}")
    with pytest.raises(grpc.RpcError) as e:
        pbg.VaultStub(ch).Info(pb.InfoRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # A valid client certificate cannot use the peer service.
    cc, kk = cluster.certs.client("owner")
    ch = grpc.secure_channel(f"127.0.0.1:{cluster.ports[0]}", channel_credentials(cluster.certs.ca, cc, kk))
    with pytest.raises(grpc.RpcError) as e:
        pbg.PeerStub(ch).Hello(pb.HelloRequest(sender=1, x25519_public_key=bytes(32)), timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    _unchanged(client, before)


def test_oversized_message_is_refused(cluster, client):
    before = client.info()
    stub = _raw_stub(cluster, 2, options=[("grpc.max_send_message_length", 64 << 20)])
    header = pb.Frame(header=pb.BundleHeader(kind="txn", session_id=str(uuid.uuid4())))
    frames = iter([header, pb.Frame(chunk=bytes(9 << 20))])
    with pytest.raises(grpc.RpcError) as e:
        stub.Prepare(frames, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _unchanged(client, before)
    r = client.search_results(cluster.images[4], k=1)[0]  # the service still works
    assert r.ids == [4]
    assert np.isfinite(r.distances).all()


def test_bad_k_and_health_endpoint(cluster, client):
    with pytest.raises(TriVaultError, match="k must be in"):
        client.search_results(cluster.images[0], k=0)[0]
    from servers.healthcheck import main as health

    assert health(["--config", str(cluster.config_path), "--id", "1"]) == 0


def test_one_server_refusing_stops_the_others_at_once(cluster, client):
    """Servers 0 and 1 run the session; server 2 refuses it: 0 and 1 fail fast, not at the timeout."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from protocols.sharing import share_fixed

    info = client.info()
    sid = str(uuid.uuid4())
    pairs = share_fixed(torch.zeros(1, 3, 16, 16, dtype=torch.float64))

    auth = client.sign("search", {"session": sid})  # one signed request (k left unsigned here), sent to all three

    def call(i: int, k: int):
        meta = {"k": k, "index_version": info["index_version"], "model_version": info["model_version"]}
        b = bd.Bundle("search", sid, meta, bd.pairs_to_tensors("query", pairs[i]), auth)
        try:
            list(_raw_stub(cluster, i).Search(bd.encode(b), timeout=30))
            return None
        except grpc.RpcError as exc:
            return exc.details()

    t0 = time.monotonic()
    with ThreadPoolExecutor(3) as ex:
        out = list(ex.map(call, (0, 1, 2), (1, 1, 0)))
    assert "k must be in" in out[2]
    assert all("aborted the query" in o for o in out[:2]), out  # directly, or relayed by the other peer
    assert time.monotonic() - t0 < 4.0  # the peer timeout is 5 s
