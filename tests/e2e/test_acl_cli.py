"""``trivault keys new / register / grant / get / trace / revoke / audit`` against three real servers."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from client.cli import app
from client.local_cluster import LocalCluster
from client.sdk import Client
from tests.integration.conftest import RES, small_images, tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from skimage import data

    lc = LocalCluster(tmp_path_factory.mktemp("aclcli"), txn_timeout_s=8.0, peer_timeout_s=5.0)
    lc.start()
    with Client(lc.client_config, progress=False) as c:
        c.register_model(tiny_model(), resolution=RES)
        c.upload(small_images(2) + [data.chelsea()[:200, 50:250]], labels=["a", "b", "cat"])
    yield lc
    lc.stop()


def test_keys_grant_get_trace_revoke_audit(cluster, tmp_path):
    cfg = str(cluster.client_config)
    me = tmp_path / "bob"
    r = runner.invoke(app, ["keys", "new", "--out", str(me), "--role", "doctor"])
    assert r.exit_code == 0, r.output
    uid = json.loads((me / "identity.json").read_text())["user_id"]
    assert oct((me / "sign.key").stat().st_mode & 0o777) == "0o600"
    out = tmp_path / "cat.png"
    r = runner.invoke(app, ["get", "2", "-o", str(out), "-c", cfg, "-i", str(me)])
    assert r.exit_code == 1 and "unknown-signer" in r.output  # not registered yet
    assert (
        runner.invoke(app, ["register", str(me / "identity.json"), "--attr", "role=doctor", "-c", cfg]).exit_code == 0
    )
    r = runner.invoke(app, ["get", "2", "-o", str(out), "-c", cfg, "-i", str(me)])
    assert r.exit_code == 1 and "PERMISSION_DENIED" in r.output  # registered, but no grant
    r = runner.invoke(app, ["grant", uid, "default", "--outcome", "ORIGINAL", "--expires", "1h", "--purpose", "care",
                            "-c", cfg])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["get", "2", "-o", str(out), "--purpose", "care", "-c", cfg, "-i", str(me)])
    assert r.exit_code == 0 and "marked for you" in r.output, r.output
    # the leaked file, re-compressed at JPEG q75, still names bob to the owner
    from client.watermark import load_rgb, save_rgb

    leak = tmp_path / "leak.jpg"
    save_rgb(leak, load_rgb(out), jpeg_quality=75)
    r = runner.invoke(app, ["trace", str(leak), "-c", cfg])
    assert r.exit_code == 0 and uid[:12] in r.output, r.output
    assert runner.invoke(app, ["revoke", uid, "-c", cfg]).exit_code == 0
    r = runner.invoke(app, ["get", "2", "-o", str(out), "--purpose", "care", "-c", cfg, "-i", str(me)])
    assert r.exit_code == 1 and "PERMISSION_DENIED" in r.output
    r = runner.invoke(app, ["rekey", "-c", cfg, "--json"])  # the revoked scope, queued by revoke
    assert r.exit_code == 0 and 2 in json.loads(r.stdout)["rekeyed"], r.output
    r = runner.invoke(app, ["audit", "-c", cfg])
    assert r.exit_code == 0 and "audit OK" in r.output, r.output
    with sqlite3.connect(cluster.root / "data" / "server2" / "audit.db") as db:  # a server drops its log's tail
        db.execute("DROP TRIGGER audit_no_delete")
        db.execute("DELETE FROM audit_log WHERE seq=(SELECT MAX(seq) FROM audit_log WHERE event='revoke')")
    r = runner.invoke(app, ["audit", "-c", cfg])
    assert r.exit_code == 1 and "server 2" in r.output, r.output
