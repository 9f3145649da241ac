"""docker/compose.yaml passes the structural validator, and the validator catches mistakes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("validate_compose", ROOT / "scripts" / "validate_compose.py")
vc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vc)


def test_compose_is_valid():
    assert vc.validate() == []


def test_validator_catches_a_shared_volume_and_a_foreign_key(tmp_path):
    doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    doc["services"]["server1"]["volumes"][0] = "server0-data:/var/lib/trivault"
    doc["services"]["server2"]["volumes"].append("./certs/server0.key:/etc/trivault/certs/server0.key:ro")
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(doc))
    (tmp_path / "cluster.toml").write_text((ROOT / "docker" / "cluster.toml").read_text())
    errs = "\n".join(vc.validate(bad))
    assert "own data volume" in errs and "another server's key" in errs


def test_validator_catches_a_ray_cluster_shared_by_two_servers(tmp_path):
    doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    doc["services"]["ray-worker1"]["networks"] = ["ray0"]
    doc["services"]["ray-worker2"]["volumes"] = ["server0-data:/var/lib/trivault:ro"]
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(doc))
    (tmp_path / "cluster.toml").write_text((ROOT / "docker" / "cluster.toml").read_text())
    errs = "\n".join(vc.validate(bad))
    assert "ray-worker1: must be on network ray1 only" in errs and "may mount only server2-data" in errs
