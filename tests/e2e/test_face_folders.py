"""A face collection as datasets ship it, through the CLI and three real servers: ORL's PGM files
and Yale's GIF files named without an image extension (``subject01.happy``), from
``../shared/data/deid/faces``. Each person's first photo is the query; the rest are uploaded.
The secure top-1 must show the same person for most people (measured on all 35 ORL/Yale people
of the shared folder with 320 photos uploaded and the default PCA model: 34 of 35, P@5 0.83)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.e2e.test_readme_flow import env_for

FACES = SHARED_DATA / "deid" / "faces"
PEOPLE = ["orl_s01", "orl_s02", "orl_s03", "orl_s04", "orl_s05", "yale_subject01", "yale_subject02",
          "yale_subject03"]


def write_collection(root: Path) -> list[tuple[Path, str]]:
    """db/<person>/... (Yale files under their original extension-less names) and one query each."""
    rows = list(csv.DictReader((FACES / "index.csv").open()))
    queries = []
    for person in PEOPLE:
        mine = sorted((r for r in rows if r["identity"] == person), key=lambda r: r["file"])
        for n, r in enumerate(mine):
            src = FACES / r["file"]
            name = Path(r["source_path"]).name if person.startswith("yale") else src.name
            dst = (root / "q" / f"{person}__{name}") if n == 0 else (root / "db" / person / name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            if n == 0:
                queries.append((dst, person))
    return queries


@pytest.mark.skipif(not (FACES / "index.csv").is_file(), reason="needs ../shared/data/deid/faces")
@pytest.mark.timeout(1200)
def test_face_folders_upload_and_the_secure_search_finds_the_person(tmp_path: Path) -> None:
    queries = write_collection(tmp_path)
    n_db = sum(1 for p in (tmp_path / "db").rglob("*") if p.is_file())
    assert any(p.suffix not in (".pgm", ".gif") for p in (tmp_path / "db").rglob("*") if p.is_file())
    env = env_for(tmp_path)

    def run(*args: str, timeout: int = 600) -> str:
        r = subprocess.run(["trivault", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=timeout, check=False)
        assert r.returncode == 0, f"trivault {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    try:
        run("up", "--detach")
        out = run("upload", "db/")
        assert f"uploaded {n_db} images" in out and "ignored" not in out, out
        top1 = {}
        for q, person in queries:
            got = json.loads(run("search", str(q), "-k", "3", "--json"))["results"]
            assert len(got) == 3
            top1[person] = got[0]["name"].split("/")[0]
        hits = sum(top1[p] == p for p in top1)
        assert hits >= len(PEOPLE) - 1, top1
    finally:
        from client.local_cluster import stop_servers

        stop_servers(tmp_path / "trivault-cluster")
