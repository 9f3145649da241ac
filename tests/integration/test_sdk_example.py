"""The README's "Python SDK" example runs as written against three real servers (a fresh
deployment), and ``import trivault`` gives the SDK with its type marker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources

from client.local_cluster import REPO_ROOT, LocalCluster


def readme_sdk_example() -> str:
    """The first ```python block of the README's "## Python SDK" section."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Python SDK\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "README's Python SDK section has no python block"
    return blocks[0]


def test_trivault_namespace():
    import trivault
    from client.sdk import Client

    assert trivault.Client is Client
    for name in ("ClientConfig", "ConfigError", "TriVaultError", "TriVaultUnavailable", "TriVaultWarning",
                 "TamperError", "PartialCommitError", "SearchResult", "SearchBatch", "ImageEntry", "Identity",
                 "build_model"):
        assert hasattr(trivault, name), name
    assert issubclass(trivault.TriVaultUnavailable, trivault.TriVaultError)
    assert resources.files("trivault").joinpath("py.typed").is_file()
    m = trivault.build_model("tiny", resolution=32, dim=16)
    assert m.recipe == {"kind": "tiny", "resolution": 32, "dim": 16}


def test_readme_python_sdk_example_runs(tmp_path):
    code = readme_sdk_example()
    work = tmp_path / "work"
    work.mkdir()
    with LocalCluster(tmp_path / "deploy", peer_timeout_s=30.0) as lc:
        (work / "client.toml").symlink_to(lc.client_config)
        (work / "example.py").write_text(code)
        out = subprocess.run([sys.executable, "example.py"], cwd=work, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    names = ["astronaut", "coffee", "cat"]
    assert lines[:3] == [f"{i} {n} default {lines[i].split()[-1]}" for i, n in enumerate(names)]
    assert lines[3].startswith("[0 2] ")  # the nearest image of each query is itself
    assert lines[4] == "[1] ['coffee']"
    assert (work / "astronaut.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The SDK writes nothing itself (no progress bars by default); faiss's own k-means notice on
    # a collection under 39 images (index/build.py) is the only line allowed on stderr.
    assert [ln for ln in out.stderr.splitlines() if not ln.startswith("WARNING clustering")] == []
