"""A server refuses to start on a port in use (``grpc.so_reuseport`` 0) or on a data folder
another server holds (``fcntl.flock`` on ``data_dir/server.lock``), with a clear one-line
reason and a non-zero exit; the running servers are not disturbed. The lock goes with its
holder, even on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from client.local_cluster import REPO_ROOT, free_port
from servers.storage import DataDirLock, StorageError


def start_server(cluster, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m servers --id 0`` with the cluster's config and ``env`` overrides; waits for its exit."""
    return subprocess.run([sys.executable, "-m", "servers", "--id", "0", "--config", str(cluster.config_path)],
                          cwd=REPO_ROOT, env=dict(os.environ, **env), capture_output=True, text=True, timeout=120)


def test_second_server_on_a_port_in_use_fails_clearly(cluster, client, tmp_path):
    out = start_server(cluster, {"TRIVAULT_DATA_ROOT": str(tmp_path / "data")})  # own data, same port
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()[-1]
    assert err == (f"trivault server 0: Failed to bind 127.0.0.1:{cluster.ports[0]}: the port is in use "
                   "(is another server running?)"), out.stderr[-2000:]
    assert "TRIVAULT_READY" not in out.stdout and "Traceback" not in out.stderr
    assert client.info()["image_ids"]  # the first server still answers


def test_second_server_on_a_held_data_folder_fails_clearly(cluster, client):
    data = cluster.root / "data" / "server0"
    before = sorted(p.name for p in data.iterdir())
    ids = client.info()["image_ids"]
    out = start_server(cluster, {"TRIVAULT_LISTEN": f"127.0.0.1:{free_port()}"})  # own port, same data
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()[-1]
    assert err == (f"trivault server 0: data folder {data} is in use by another server "
                   f"(pid {cluster.procs[0].pid}); stop it first or give this server its own data folder")
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in data.iterdir()) == before
    assert client.info()["image_ids"] == ids


def test_the_lock_goes_with_its_holder_even_on_sigkill(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from servers.storage import DataDirLock; "
                               f"DataDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StorageError, match=f"in use by another server \\(pid {holder.pid}\\)"):
            DataDirLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    lock = DataDirLock(tmp_path).acquire()  # no stale lock after a crash
    with pytest.raises(StorageError):
        DataDirLock(tmp_path).acquire()  # held (another open file description, same process)
    lock.release()
    t0 = time.monotonic()
    with DataDirLock(tmp_path):
        pass
    assert time.monotonic() - t0 < 1.0
