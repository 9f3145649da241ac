"""The README's "Using it" block, run exactly as written (each line a subprocess) in a fresh
folder with a few real scikit-image photos, against three real local servers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
STEP_TIMEOUT_S = 900  # one command on a busy 2-core machine (upload --deid with EfficientNet is the longest)
NOISE = ("Loaded pretrained weights", "WARNING clustering", "Traceback")


def readme_commands(readme: Path = REPO / "README.md") -> list[list[str]]:
    """The shell lines of the first ```bash block of the README's "Using it" section, comments dropped."""
    text = readme.read_text()
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "no ```bash block in README's Using it"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def write_photos(folder: Path) -> None:
    """photos/ (JPEG, PNG, PGM, WebP, one in a subfolder) and query.png, from scikit-image samples."""
    from skimage import data

    photos = folder / "photos"
    (photos / "kitchen").mkdir(parents=True)
    Image.fromarray(data.astronaut()).resize((256, 256)).save(photos / "astronaut.jpg", quality=90)
    Image.fromarray(data.chelsea()).save(photos / "chelsea.png")
    Image.fromarray(data.coffee()).resize((300, 200)).save(photos / "kitchen" / "coffee.png")
    Image.fromarray(data.camera()).resize((256, 256)).save(photos / "camera.pgm")
    Image.fromarray(data.rocket()).resize((320, 214)).save(photos / "rocket.webp")
    Image.fromarray(data.chelsea()[20:280, 30:420]).save(folder / "query.png")


def env_for(folder: Path) -> dict[str, str]:
    """The user's shell: the venv's ``trivault`` on PATH, a private config directory, no overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIVAULT_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["XDG_CONFIG_HOME"] = str(folder / "xdg")
    return env


def test_readme_lines_parse():
    cmds = readme_commands()
    assert cmds[0][:2] == ["trivault", "up"] and cmds[-1][:2] == ["trivault", "down"]
    assert all(c[0] == "trivault" for c in cmds)


def _check_step(cmd: list[str], out: str, folder: Path) -> None:
    """What a new user should see at each step."""
    verb = cmd[1]
    if verb == "status":
        assert out.count("yes") == 3, out
    elif verb == "upload":
        for name in ("astronaut.jpg", "camera.pgm", "chelsea.png", "kitchen/coffee.png", "rocket.webp"):
            assert name in out, out
        assert "uploaded 5 images" in out and "catalog.json" in out
        assert re.search(r"astronaut\.jpg\s*│ uploaded\s*│ 1\s*│ 0", out), out  # one face changed
    elif verb == "ls":
        assert "5 images" in out and "kitchen/coffee.png" in out
    elif verb == "search" and "--json" in cmd:  # every photo a query, in one secure session
        answers = json.loads(out)["queries"]
        assert len(answers) == 5 and all(a["results"][0]["name"] in a["query"] for a in answers), out
    elif verb == "search" and "--identity" not in cmd:
        first = next(ln for ln in out.splitlines() if ln.startswith("│"))
        assert "chelsea.png" in first, out  # the cat query finds the cat
    elif verb == "get" and "--identity" not in cmd:
        assert (folder / "out" / "0.jpg").read_bytes() == (folder / "photos" / "astronaut.jpg").read_bytes()
    elif verb == "register":
        assert "'role': 'analyst'" in out and "'organisation': 'acme'" in out, out
    elif verb == "get":
        assert "deid copy" in out and "watermarked" in out and (folder / "alice" / "0.png").exists()
    elif verb == "trace":
        uid = json.loads((folder / "alice" / "identity.json").read_text())["user_id"]
        assert uid in out
    elif verb == "audit":
        assert "audit OK" in out
    elif verb == "down":
        assert "stopped servers [0, 1, 2]" in out


@pytest.mark.timeout(3600)
def test_readme_flow_runs_as_written(tmp_path):
    write_photos(tmp_path)
    env = env_for(tmp_path)
    cmds = readme_commands()
    transcript = []  # what a new user sees, step by step (printed with pytest -s)
    try:
        for n, cmd in enumerate(cmds):
            t0 = time.monotonic()
            r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=STEP_TIMEOUT_S, check=False)
            transcript.append(f"$ {shlex.join(cmd)}   [{time.monotonic() - t0:.0f} s, exit {r.returncode}]\n"
                              f"{r.stdout}{r.stderr}")
            print(transcript[-1])
            assert r.returncode == 0, f"{shlex.join(cmd)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
            assert not any(x in r.stdout for x in NOISE), r.stdout  # library noise stays off stdout
            _check_step(cmd, r.stdout, tmp_path)
            if n == 0:  # a second `up` on the same folder is refused, clearly
                again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                                       check=False)
                assert again.returncode == 1 and "already running" in again.stderr, again.stderr
    finally:
        from client.local_cluster import stop_servers

        stop_servers(tmp_path / "trivault-cluster")
