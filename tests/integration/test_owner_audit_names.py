"""Issue 17 items 2 and 3 across three real server processes: no plaintext name or label on any
server (grep of every data folder and log), names for the owner and granted users only, and
the owner's merged, cross-checked audit with its filters, pages and the trace look-up."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace

import grpc
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from client.audit_view import image_of, select, trace_lookup
from client.cli import app
from client.config import ClientConfig
from client.identity import Identity
from client.local_cluster import LocalCluster
from client.sdk import Client, TriVaultError
from protos.trivault.v1 import trivault_pb2 as pb

from .conftest import RES, small_images, tiny_model

SECRET_FILE = "patient_1234_scan.png"
SECRET_LABEL = "tumour-left-lung-7781"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Own cluster: 4 images (two uploaded from files named like real scans, as the CLI does),
    bob (granted ORIGINAL, registered as "Bob Smith"), eve (registered, no grant)."""
    root = tmp_path_factory.mktemp("h5")
    lc = LocalCluster(root / "cluster", txn_timeout_s=8.0, peer_timeout_s=5.0, query_timeout_s=30.0)
    lc.start()
    owner = Client(lc.client_config, progress=False)
    owner.register_model(tiny_model(), resolution=RES)
    from skimage import data

    imgs = small_images(3, seed=5) + [np.ascontiguousarray(data.chelsea()[:200, 50:250])]  # big enough to mark
    files = [root / SECRET_FILE, root / "second.png"]
    for f, a in zip(files, imgs):
        Image.fromarray(a).save(f)
    owner.upload([str(f) for f in files] + imgs[2:], labels=[SECRET_FILE, "second.png", SECRET_LABEL, "fourth"])
    users = {}
    for name, attrs in (("bob", {"name": "Bob Smith", "role": "doctor"}), ("eve", {"role": "none"})):
        ident = Identity.create()
        owner.register_user(ident.public(), attrs)
        cfg = replace(ClientConfig.load(lc.client_config), owner_dir=root / name)  # not the owner's catalog
        users[name] = Client(cfg, progress=False, identity=ident)
    owner.grant(users["bob"].identity.user_id, outcome="ORIGINAL")
    yield lc, owner, users, imgs
    for c in (owner, *users.values()):
        c.close()
    lc.stop()


def _server_bytes(lc: LocalCluster) -> dict[str, bytes]:
    """Every file of every server: data folders (SQLite, WAL, objects, staging) and logs."""
    out = {}
    for folder in [lc.root / "data" / f"server{i}" for i in range(3)] + [lc.root / "logs"]:
        for p in folder.rglob("*"):
            if p.is_file():
                out[str(p)] = p.read_bytes()
    return out


def test_servers_hold_no_names_and_grantees_read_them(world):
    lc, owner, users, imgs = world
    bob, eve = users["bob"], users["eve"]
    got = bob.retrieve(0)
    assert got.label == SECRET_FILE  # the granted user reads the name (metadata key sealed to bob)
    hit = bob.search_results(imgs[2], k=1)[0]
    assert hit.ids == [2] and hit.labels == [SECRET_LABEL]
    assert {e.id: e.name for e in bob.ls()} == {0: SECRET_FILE, 1: "second.png", 2: SECRET_LABEL, 3: "fourth"}
    assert [e.name for e in eve.ls()] == [None] * 4  # no grant: ids only
    assert [e.name for e in owner.ls()][:1] == [SECRET_FILE]
    files = _server_bytes(lc)
    assert any(p.endswith("meta.db") for p in files) and any(p.endswith(".meta") for p in files)
    for needle in (SECRET_FILE, "patient_1234", SECRET_LABEL, "second.png"):
        leaks = [p for p, data in files.items() if needle.encode() in data or needle.encode("utf-16-le") in data]
        assert not leaks, f"{needle!r} found in {leaks}"


def test_owner_audit_lists_retrievals_refusals_with_filters(world):
    lc, owner, users, imgs = world
    bob, eve = users["bob"], users["eve"]
    bob_id, eve_id = bob.identity.user_id, eve.identity.user_id
    t0 = time.time()
    bob.retrieve(1)
    with pytest.raises(TriVaultError, match="PERMISSION_DENIED"):
        eve.retrieve(1)
    with pytest.raises(TriVaultError, match="PERMISSION_DENIED"):
        eve.search(imgs[0], k=1)
    view = owner.owner_audit()
    assert view.ok and view.servers == [0, 1, 2], view.divergence.summary()
    bobs = select(view.events, user=bob_id, image=1)
    assert [(e.event, e.detail.get("outcome"), e.servers) for e in bobs] == [
        ("retrieve", "ORIGINAL", (0, 1, 2)), ("names", None, (0, 1, 2))]  # the retrieval, then its name look-up
    refused = select(view.events, user=eve_id, since=t0)
    assert {(e.event, e.detail.get("outcome") or e.detail.get("reason")) for e in refused} == {
        ("retrieve", "NOTHING"), ("reject", "forbidden")}
    assert all(e.servers == (0, 1, 2) for e in refused if e.event == "retrieve")  # a refused search may stop
    assert all(e.servers for e in refused)  # before every server saw it: a refusal is one server's observation
    assert {"register", "upload", "grant", "search", "names"} <= {e.event for e in view.events}
    assert select(view.events, since=time.time() + 60) == []
    # trace look-up: the recipient's registered name, the image and the time of the retrieval
    match = trace_lookup(view, bob_id, 1)
    assert match.name == "Bob Smith (doctor)" and [image_of(e) for e in match.retrievals] == [1]
    assert abs(match.retrievals[0].ts_ms / 1000 - t0) < 60
    assert view.recipients(1) == [bob_id]


def test_users_see_only_their_own_entries(world):
    lc, owner, users, imgs = world
    bob, eve = users["bob"], users["eve"]
    mine = bob.owner_audit()  # the whole chain verifies, but everything not bob's is redacted
    assert mine.ok, mine.divergence.summary()
    assert mine.events and all(e.actor == bob.identity.user_id for e in mine.events)
    raw = bob.acl.audit_exports()[0]
    assert any(e.get("redacted") for e in raw) and not any(eve.identity.user_id in json.dumps(e) for e in raw)
    # an unsigned read (the old, unauthenticated Audit call) gets nothing from any server
    for stub in owner.fan.stubs:
        with pytest.raises(grpc.RpcError) as err:
            stub.Audit(pb.SignedCall(), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_audit_cli_filters_and_pages(world):
    lc, owner, users, _ = world
    cfg = str(lc.client_config)
    bob_id = users["bob"].identity.user_id
    r = CliRunner().invoke(app, ["audit", "--user", bob_id, "--json", "-c", cfg])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and out["total"] >= 3 and all(bob_id in (e["actor"], e["subject"]) for e in out["entries"])
    assert any(e["event"] == "retrieve" and e["image_name"] == SECRET_FILE and e["user"] == "Bob Smith (doctor)"
               for e in out["entries"])
    p2 = json.loads(CliRunner().invoke(app, ["audit", "--user", bob_id, "--limit", "2", "--page", "2", "--json",
                                             "-c", cfg]).stdout)
    assert p2["pages"] == -(-out["total"] // 2) and p2["entries"] == out["entries"][2:4]
    by_name = json.loads(CliRunner().invoke(app, ["audit", "--user", "Bob Smith", "--json", "-c", cfg]).stdout)
    assert by_name["entries"] == out["entries"]
    r = CliRunner().invoke(app, ["audit", "--image", "1", "--since", "1h", "-c", cfg])
    assert r.exit_code == 0 and "audit OK" in r.output and "NOTHING" in r.output, r.output
    r = CliRunner().invoke(app, ["audit", "--since", "yesterday-ish", "-c", cfg])
    assert r.exit_code == 2 and "--since" in r.output


def test_trace_prints_name_image_and_time(world, tmp_path):
    lc, owner, users, _ = world
    bob = users["bob"]
    got = bob.retrieve(3)  # released to bob: marked by the servers
    leak = tmp_path / "leak.jpg"
    Image.open(io.BytesIO(got.data)).convert("RGB").save(leak, quality=75)
    r = CliRunner().invoke(app, ["trace", str(leak), "--image", "3", "--json", "-c", str(lc.client_config)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["recipient"] == bob.identity.user_id and out["name"] == "Bob Smith (doctor)"
    assert out["image"] == 3 and out["image_name"] == "fourth" and out["retrievals"]
    assert abs(out["retrieved_ms"] / 1000 - time.time()) < 120
