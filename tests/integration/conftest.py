"""Fixtures: three real server processes on 127.0.0.1 (ephemeral ports, mutual TLS)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from client.local_cluster import LocalCluster
from client.sdk import Client

RES = 16  # small model input keeps the secure CNN fast on 2 cores
DIM = 8


def tiny_model() -> nn.Module:
    """A small seeded CNN (conv/relu/pool/linear) registered as the model in most tests."""
    g = torch.Generator().manual_seed(3)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, DIM))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m.eval()


def small_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct 48x48 crops of the bundled sample photos."""
    from client.demo_data import base_images

    rng = np.random.default_rng(seed)
    bases = [a for _, a in base_images()]
    out = []
    for i in range(n):
        a = bases[i % len(bases)]
        y, x = rng.integers(0, a.shape[0] - 48), rng.integers(0, a.shape[1] - 48)
        out.append(np.ascontiguousarray(a[y:y + 48, x:x + 48]))
    return out


def make_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Three running servers with the tiny model registered and 12 images uploaded."""
    lc = LocalCluster(tmp_path_factory.mktemp("cluster"), txn_timeout_s=8.0, peer_timeout_s=5.0,
                      query_timeout_s=30.0)
    lc.start()
    c = Client(lc.client_config, progress=False)
    c.register_model(tiny_model(), resolution=RES)
    imgs = small_images(12)
    ids = c.upload(imgs, labels=[f"img{i}" for i in range(12)])
    lc.images = dict(zip(ids, imgs))  # type: ignore[attr-defined]
    yield lc
    c.close()
    lc.stop()


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """One cluster shared by the non-destructive test modules (test_faults.py has its own)."""
    yield from make_cluster(tmp_path_factory)


@pytest.fixture
def client(cluster: LocalCluster):
    """A fresh SDK client for the module's cluster."""
    c = Client(cluster.client_config, progress=False)
    yield c
    c.close()
