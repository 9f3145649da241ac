"""Shard pieces without a Ray cluster: bucket ranges, npz memory maps, partial products, config."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from index import build_index, share_index
from index.synthetic import clustered
from servers.config import load_config
from servers.shards import BucketShard, bucket_ranges, npz_member
from servers.storage import tensors_to_npz


@pytest.mark.parametrize(("C", "w"), [(1, 1), (7, 2), (10, 3), (3, 8), (1000, 64)])
def test_bucket_ranges_are_contiguous_balanced_and_cover_every_bucket(C, w):
    r = bucket_ranges(C, w)
    assert r[0][0] == 0 and r[-1][1] == C and len(r) == min(C, w)
    assert all(a[1] == b[0] for a, b in zip(r, r[1:]))
    sizes = [b - a for a, b in r]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        bucket_ranges(C, 0)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Server 1's shares of a small real index, written as the store writes them (v3.npz)."""
    x = clustered(600, 8, 6, seed=2)
    sh = share_index(build_index(x, None, 9, seed=2))[1]
    d = tmp_path_factory.mktemp("index")
    (d / "v3.npz").write_bytes(tensors_to_npz(sh.to_tensors()))
    return d, sh


def test_npz_members_map_in_place_and_equal_np_load(stored):
    d, _ = stored
    with np.load(d / "v3.npz") as z:
        for name in z.files:
            m = npz_member(d / "v3.npz", name)
            assert isinstance(m, np.memmap) and np.array_equal(m, z[name])
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.arange(10))
    (d / "packed.npz").write_bytes(buf.getvalue())
    assert zipfile.ZipFile(d / "packed.npz").getinfo("a.npy").compress_type == zipfile.ZIP_DEFLATED
    with pytest.raises(ValueError, match="compressed"):
        npz_member(d / "packed.npz", "a")


def test_partial_fetches_and_centroid_terms_add_up_to_the_whole_table(stored):
    d, sh = stored
    C = sh.n_centroids
    rng = np.random.default_rng(0)
    a = rng.integers(-(2**62), 2**62, size=(2, C), dtype=np.int64)  # any ring values: the sum is linear
    b = rng.integers(-(2**62), 2**62, size=(2, C), dtype=np.int64)
    whole = BucketShard(str(d), 0, C)
    parts = [BucketShard(str(d), s, e) for s, e in bucket_ranges(C, 2)]
    full = whole.fetch(3, a, b)
    total = sum(p.fetch(3, np.ascontiguousarray(a[:, p.first:p.last]), np.ascontiguousarray(b[:, p.first:p.last]))
                for p in parts)
    lo, hi = sh.rows
    assert np.array_equal(full, total)
    assert torch.equal(torch.from_numpy(full), torch.from_numpy(a) @ lo + torch.from_numpy(b) @ hi)
    q_lo = rng.integers(-(2**40), 2**40, size=(3, sh.dim), dtype=np.int64)
    q_hi = rng.integers(-(2**40), 2**40, size=(3, sh.dim), dtype=np.int64)
    cross = np.concatenate([p.centroid_cross(3, q_lo, q_hi) for p in parts], axis=1)
    assert np.array_equal(cross, whole.centroid_cross(3, q_lo, q_hi))
    info = parts[0].info()
    assert info["version"] == 3 and info["mapped_bytes"] < whole.info()["mapped_bytes"]


def test_shards_config_section_and_per_server_override(tmp_path):
    base = 'ca = "ca.pem"\n' + "".join(
        f'[servers.{i}]\naddress = "127.0.0.1:{5000 + i}"\ncert = "s{i}.pem"\nkey = "s{i}.key"\n' for i in range(3))
    (tmp_path / "c.toml").write_text(base + '[shards]\nworkers = 2\ntimeout_s = 5\n'
                                     '[servers.2.shards]\nworkers = 4\naddress = "ray://ray-head2:10001"\n')
    c0, c2 = load_config(tmp_path / "c.toml", 0), load_config(tmp_path / "c.toml", 2)
    assert (c0.shard_workers, c0.ray_address, c0.shard_timeout_s) == (2, None, 5.0)
    assert (c2.shard_workers, c2.ray_address) == (4, "ray://ray-head2:10001")
    assert load_config(tmp_path / "c.toml", 1).shard_workers == 2
    (tmp_path / "d.toml").write_text(base)
    assert load_config(tmp_path / "d.toml", 0).shard_workers == 0  # default: in-process
    (tmp_path / "e.toml").write_text(base + '[shards]\naddress = "ray://h:10001"\n')
    with pytest.raises(ValueError, match="workers >= 1"):
        load_config(tmp_path / "e.toml", 0)
