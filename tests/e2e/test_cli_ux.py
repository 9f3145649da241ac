"""The CLI's edges against three real servers: upload's per-file report (bad file, duplicate,
subfolder, .pgm, exit 3), ls/search/get --json, k above the candidates, errors on stderr with
hints, register taking the bundle's claims, grant notes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from client.cli import app
from client.local_cluster import LocalCluster, free_port

runner = CliRunner()
TINY = ["--model", "tiny", "--resolution", "16", "--dim", "8"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    lc = LocalCluster(tmp_path_factory.mktemp("ux"), txn_timeout_s=8.0, peer_timeout_s=5.0)
    lc.start()
    yield lc
    lc.stop()


@pytest.fixture(scope="module")
def uploaded(cluster, tmp_path_factory):
    """photos/: three good images (one .pgm in a subfolder), a duplicate, a broken file, a text file."""
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    Image.fromarray(data.chelsea()[:120, :160]).save(d / "cat.png")
    Image.fromarray(data.coffee()[:120, :160]).save(d / "coffee.jpg")
    Image.fromarray(data.camera()[:128, :128]).save(d / "sub" / "camera.pgm")
    (d / "sub" / "cat-again.png").write_bytes((d / "cat.png").read_bytes())
    (d / "broken.png").write_bytes((d / "cat.png").read_bytes()[:200])
    (d / "notes.txt").write_text("not an image")
    r = runner.invoke(app, ["upload", str(d), "-c", str(cluster.client_config), *TINY, "--json"])
    return d, r


def test_upload_reports_each_file_and_exits_3(uploaded):
    d, r = uploaded
    assert r.exit_code == 3, r.output
    doc = json.loads(r.stdout)
    by_name = {f["name"]: f for f in doc["files"]}
    assert by_name["broken.png"]["status"] == "failed" and "truncated" in by_name["broken.png"]["detail"]
    assert by_name["sub/cat-again.png"]["status"] == "duplicate" and "cat.png" in by_name["sub/cat-again.png"]["detail"]
    ids = {n: by_name[n]["id"] for n in ("cat.png", "coffee.jpg", "sub/camera.pgm")}
    assert sorted(ids.values()) == [0, 1, 2]
    assert "notes.txt" not in by_name and "not images" in r.stderr
    assert "broken.png" in r.stderr  # the warning names the file
    saved = json.loads(Path(doc["map"]).read_text())  # the id -> file map is kept with the owner's state
    assert {e["id"]: e["name"] for e in saved["images"]} == {v: k for k, v in ids.items()}


def test_second_upload_skips_known_bytes(cluster, uploaded):
    d, _ = uploaded
    r = runner.invoke(app, ["upload", str(d / "sub"), "-c", str(cluster.client_config), *TINY])
    assert r.exit_code == 0, r.output
    assert r.stdout.count("same bytes as image") == 2 and "uploaded" not in r.stdout


def test_eps_without_deid_is_a_usage_error(cluster, uploaded):
    d, _ = uploaded
    r = runner.invoke(app, ["upload", str(d), "-c", str(cluster.client_config), "--eps", "2"])
    assert r.exit_code == 2 and "--eps only applies with --deid" in r.stderr


@pytest.mark.usefixtures("uploaded")
def test_ls_json(cluster):
    r = runner.invoke(app, ["ls", "-c", str(cluster.client_config), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["id"], x["name"], x["collection"]) for x in rows] == [
        (0, "cat.png", "default"), (1, "coffee.jpg", "default"), (2, "sub/camera.pgm", "default")]
    assert all(x["size"] > 0 for x in rows)


def test_search_json_names_and_k_above_candidates(cluster, uploaded):
    d, _ = uploaded
    r = runner.invoke(app, ["search", str(d / "cat.png"), "-k", "10", "-c", str(cluster.client_config), "--json"])
    assert r.exit_code == 0, r.output  # never an internal error
    doc = json.loads(r.stdout)
    assert doc["results"][0]["id"] == 0 and doc["results"][0]["name"] == "cat.png"
    assert len(doc["results"]) == 3
    assert "note:" in r.stderr  # why there are fewer than k


def test_get_creates_folder_and_keeps_jpeg_extension(cluster, uploaded, tmp_path):
    d, _ = uploaded
    out = tmp_path / "new" / "dir" / "x.png"
    r = runner.invoke(app, ["get", "1", "-o", str(out), "-c", str(cluster.client_config), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["file"].endswith("x.jpg") and "JPG" in r.stderr
    assert (tmp_path / "new" / "dir" / "x.jpg").read_bytes() == (d / "coffee.jpg").read_bytes()


def test_unavailable_gives_one_line_and_hint(cluster, tmp_path):
    text = cluster.client_config.read_text()
    dead = re.sub(r'servers = \[.*\]', 'servers = [' + ", ".join(f'"127.0.0.1:{free_port()}"' for _ in range(3))
                  + ']', text)
    cfg = tmp_path / "dead.toml"
    cfg.write_text(dead)
    r = runner.invoke(app, ["ls", "-c", str(cfg)])
    assert r.exit_code == 1 and r.stdout == ""
    assert "UNAVAILABLE" in r.stderr and "is `trivault up` running?" in r.stderr
    assert "Traceback" not in r.stderr


def test_config_without_ca_is_named(cluster, tmp_path):
    cfg = tmp_path / "noca.toml"
    cfg.write_text("\n".join(ln for ln in cluster.client_config.read_text().splitlines()
                             if not ln.startswith("ca ")))
    r = runner.invoke(app, ["ls", "-c", str(cfg)])
    assert r.exit_code == 1 and "has no `ca`" in r.stderr, r.output


def test_config_discovery_env_then_user_dir(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TRIVAULT_CONFIG", raising=False)
    r = runner.invoke(app, ["ls"])
    assert r.exit_code == 1 and "no client config at" in r.stderr and "trivault up" in r.stderr
    monkeypatch.setenv("TRIVAULT_CONFIG", str(cluster.client_config))
    assert runner.invoke(app, ["ls"]).exit_code == 0
    monkeypatch.delenv("TRIVAULT_CONFIG")
    (tmp_path / "xdg" / "trivault").mkdir(parents=True)
    (tmp_path / "xdg" / "trivault" / "client.toml").write_text(cluster.client_config.read_text())
    assert runner.invoke(app, ["ls"]).exit_code == 0


def test_register_takes_claims_and_rejects_bad_attr(cluster, uploaded, tmp_path):
    cfg = str(cluster.client_config)
    me = tmp_path / "carol"
    r = runner.invoke(app, ["keys", "new", "--out", str(me), "--role", "nurse", "--org", "clinic", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["claims"] == {"role": "nurse", "organisation": "clinic"}
    r = runner.invoke(app, ["register", str(me / "identity.json"), "--attr", "role", "-c", cfg])
    assert r.exit_code == 2 and "not key=value" in r.stderr
    r = runner.invoke(app, ["register", str(me / "identity.json"), "--attr", "ward=3", "-c", cfg])
    assert r.exit_code == 0, r.output
    assert "'role': 'nurse'" in r.stdout and "'organisation': 'clinic'" in r.stdout and "'ward': '3'" in r.stdout
    r = runner.invoke(app, ["get", "0", "-o", str(tmp_path / "c.png"), "-c", cfg, "-i", str(me)])
    assert r.exit_code == 1 and "hint: ask the owner for a grant" in r.stderr, r.output
    r = runner.invoke(app, ["grant", str(me), "--purpose", "care", "-c", cfg])
    assert r.exit_code == 0 and "must declare --purpose care" in r.stderr, r.output
    r = runner.invoke(app, ["get", "0", "-o", str(tmp_path / "c.png"), "-c", cfg, "-i", str(me)])
    assert r.exit_code == 1 and "same --purpose" in r.stderr, r.output  # the grant lists a purpose
    r = runner.invoke(app, ["get", "0", "-o", str(tmp_path / "c.png"), "--purpose", "care", "-c", cfg, "-i", str(me)])
    assert r.exit_code == 0 and "watermarked" in r.stdout, r.output
    r = runner.invoke(app, ["grant", str(me), "-c", cfg])
    assert r.exit_code == 0 and "any declared purpose" in r.stderr


def test_status_and_down_when_nothing_runs(tmp_path):
    LocalCluster(tmp_path / "idle")  # certificates and configs, no servers started
    r = runner.invoke(app, ["status", "--root", str(tmp_path / "idle"), "--json"])
    assert r.exit_code == 1 and "not every server answers" in r.stderr
    assert [(s["running"], s["answering"]) for s in json.loads(r.stdout)] == [(False, False)] * 3
    r = runner.invoke(app, ["down", "--root", str(tmp_path / "idle")])
    assert r.exit_code == 0 and "no running servers" in r.stderr
    r = runner.invoke(app, ["status", "--root", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no cluster in" in r.stderr and "trivault up --detach" in r.stderr
