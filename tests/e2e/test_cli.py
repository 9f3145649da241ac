"""The ``trivault`` CLI end to end: help, up + upload/search/get/delete, and the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from client.cli import app

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))
runner = CliRunner()


@pytest.mark.parametrize("cmd", [[], ["certs"], ["up"], ["status"], ["down"], ["upload"], ["ls"], ["search"], ["get"],
                                 ["delete"], ["demo"], ["reindex"]])
def test_help(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_upload_help_states_the_measured_defaults_and_how_to_refit():
    from client.recipes import DEFAULT_DIM, DEFAULT_PROJECTION, DEFAULT_RESOLUTION

    out = " ".join(runner.invoke(app, ["upload", "--help"]).output.split())
    assert f"[default: {DEFAULT_RESOLUTION}]" in out and f"[default: {DEFAULT_DIM}]" in out
    assert f"[default: {DEFAULT_PROJECTION}]" in out and "trivault reindex" in out


def test_help_documents_config_discovery_and_exit_codes():
    r = runner.invoke(app, ["--help"])
    assert "TRIVAULT_CONFIG" in r.output and ".config/trivault/client.toml" in r.output
    assert "3 partial upload" in r.output and "2 usage" in r.output


def test_certs_have_the_right_usages(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    r = runner.invoke(app, ["certs", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    s = x509.load_pem_x509_certificate((tmp_path / "server0.pem").read_bytes())
    eku = s.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    san = s.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    c = x509.load_pem_x509_certificate((tmp_path / "client-owner.pem").read_bytes())
    assert list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert oct((tmp_path / "server0.key").stat().st_mode & 0o777) == "0o600"


def _photos(d: Path, n: int) -> list[Path]:
    from client.demo_data import base_images

    d.mkdir()
    out = []
    for name, a in base_images()[:n]:
        p = d / f"{name}.png"
        Image.fromarray(a[:96, :96]).save(p)
        out.append(p)
    return out


def test_up_upload_search_get_delete(tmp_path):
    root = tmp_path / "cluster"
    env = dict(ENV, XDG_CONFIG_HOME=str(tmp_path / "xdg"))  # `up` writes the user's client config there
    up = subprocess.Popen([sys.executable, "-m", "client.cli", "up", "--root", str(root)], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 90
        while "three servers up" not in line and time.monotonic() < deadline:
            line = up.stdout.readline()
            assert line or up.poll() is None, "trivault up exited"
        cfg = str(root / "client-owner.toml")
        photos = _photos(tmp_path / "photos", 4)
        r = runner.invoke(app, ["upload", str(tmp_path / "photos"), "-c", cfg, "--model", "tiny",
                                "--resolution", "16", "--dim", "8"])
        assert r.exit_code == 0, r.output
        assert "uploaded 4 images" in r.output
        r = runner.invoke(app, ["search", str(photos[2]), "-k", "2", "-c", cfg])
        assert r.exit_code == 0, r.output
        ranks = [ln.split("│") for ln in r.output.splitlines() if ln.startswith("│")]
        assert ranks[0][2].strip() == "2"  # its own id ranks first
        r = runner.invoke(app, ["search", str(tmp_path / "photos"), "-k", "1", "-c", cfg, "--json"])
        assert r.exit_code == 0, r.output
        answers = json.loads(r.stdout)["queries"]  # a folder: every image a query, in one secure session
        assert [Path(a["query"]).name for a in answers] == [p.name for p in sorted(photos)]
        assert all(a["results"][0]["name"] == Path(a["query"]).name for a in answers)
        out = tmp_path / "got.png"
        r = runner.invoke(app, ["get", "2", "-o", str(out), "-c", cfg])
        assert r.exit_code == 0, r.output
        assert out.read_bytes() == photos[2].read_bytes()
        r = runner.invoke(app, ["delete", "2", "-c", cfg])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["get", "2", "-o", str(out), "-c", cfg])
        assert r.exit_code == 1 and "unknown image id 2" in r.stderr
        assert (tmp_path / "xdg" / "trivault" / "client.toml").read_text().split("\n", 1)[1] == Path(cfg).read_text()
    finally:
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
    assert "servers stopped" in rest
    assert not (root / "servers.pid").exists()


def test_up_in_malicious_mode_says_what_it_costs_and_searches_a_folder_one_session_per_image(tmp_path):
    """``trivault up --security malicious --detach``: says what the mode costs, writes the malicious SDK
    timeout (900 s); a folder search runs each image in its own session (the servers' limit) and every image
    finds itself; ``down`` stops the servers."""
    root = tmp_path / "cluster"
    env = dict(ENV, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    r = subprocess.run([sys.executable, "-m", "client.cli", "up", "--root", str(root), "--detach", "--security",
                        "malicious"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "(malicious mode)" in r.stdout and "an image query takes minutes (one image per session" in r.stdout
        cfg = root / "client-owner.toml"
        assert "timeout_s = 900.0" in cfg.read_text()
        photos = _photos(tmp_path / "photos", 3)
        up = runner.invoke(app, ["upload", str(tmp_path / "photos"), "-c", str(cfg), "--model", "tiny",
                                 "--resolution", "16", "--dim", "8"])
        assert up.exit_code == 0, up.output
        found = runner.invoke(app, ["search", str(tmp_path / "photos"), "-k", "1", "-c", str(cfg), "--json"])
        assert found.exit_code == 0, found.output
        answers = json.loads(found.stdout)["queries"]
        assert [a["results"][0]["name"] for a in answers] == [p.name for p in sorted(photos)]
        logs = [(root / "logs" / f"server{i}.log").read_text() for i in range(3)]
        assert all(log.count(" done: ") == 3 for log in logs)  # three sessions on every server
    finally:
        down = subprocess.run([sys.executable, "-m", "client.cli", "down", "--root", str(root)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr


def test_demo_runs_and_shuts_down(tmp_path):
    r = subprocess.run([sys.executable, "-m", "client.cli", "demo", "--root", str(tmp_path), "--model", "tiny",
                        "--copies", "0", "--queries", "1", "--resolution", "16", "--dim", "8"],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for needle in ("three servers up", "uploaded", "query 1", "agrees with plaintext", "retrieved image",
                   "servers stopped cleanly"):
        assert needle in r.stdout, r.stdout
