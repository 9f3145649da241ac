"""benchmarks.quality on a tiny setting (package-shipped photos only, 64 px, one dim), and the
pieces it relies on: the heads reproduce the product model, window distractors are pools of
sub-rectangles, and the copy-detection ranks are right."""

from __future__ import annotations

import json

import numpy as np
import torch
from skimage import data

from benchmarks import quality
from benchmarks.quality_data import Original, person_labels
from benchmarks.quality_features import Head, head, random_head, window_count, window_features
from benchmarks.quality_metrics import copy_detection, identity_retrieval, ivf_recall, product_centroids
from client.model import default_feature_model
from client.preprocess import preprocess
from client.projection import fit_pca


def test_tiny_run_prints_settings_ivf_and_summary(capsys) -> None:
    rc = quality.main(["--json", "--no-shared", "--resolutions", "64", "--dims", "8", "--kinds", "random", "pca",
                       "--per-image", "2", "--nprobes", "1", "2", "4", "--large-n", "300", "--ivf-queries", "10",
                       "--large-candidates", "1", "--no-cache", "--quiet"])
    assert rc == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.strip()]
    ds = lines[0]
    assert ds["kind"] == "dataset" and ds["n_originals"] == 20 and ds["n_queries"] == 40 and ds["shared_dir"] is None
    settings = [x for x in lines if x["kind"] == "setting"]
    assert [(x["projection"], x["dim"]) for x in settings] == [("random", 8), ("pca", 8)]
    for s in settings:
        assert 0 < s["precision_at_1"] <= s["mAP"] <= 1 and s["precision_at_1"] <= s["recall_at_10"] <= 1
        for ivf in s["ivf_real"]:
            c = ivf["n_centroids"]
            if c in ivf["recall_at_10_vs_exact"]:  # probing every bucket is exact search
                assert ivf["recall_at_10_vs_exact"][c] == 1.0
    summary = lines[-1]
    assert summary["kind"] == "summary"
    best = max(s["mAP"] for s in settings)
    rec = summary["recommended"]
    assert summary["best"]["mAP"] == best
    if rec is not None:
        assert rec["mAP"] >= best - quality.MAP_TOLERANCE
    large = [x for x in lines if x["kind"] == "ivf_large"]
    assert large and all(x["n"] <= 300 and x["n_real"] == 20 and x["distractor_pool"] > 0 for x in large)


def test_heads_reproduce_the_product_model() -> None:
    x = torch.stack([preprocess(data.chelsea(), 64), preprocess(data.rocket(), 64), preprocess(data.camera(), 64)])
    product = default_feature_model(64, out_dim=16)
    with torch.no_grad():
        ref = product(x).double().numpy()
        pooled = product[1](product[0](x)).double().numpy()
    assert np.abs(head(random_head(16), pooled) - ref).max() < 1e-5
    none = default_feature_model(64)
    with torch.no_grad():
        assert np.abs(head(Head("none", 1280), pooled) - none(x).double().numpy()).max() < 1e-5


def test_window_features_are_pools_of_sub_rectangles() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((2, 1280, 3, 2)).astype(np.float16)
    pca = fit_pca(rng.random((30, 1280)), 4)
    from benchmarks.quality_features import pca_head

    h = pca_head(pca)
    got = window_features(h, maps)
    assert got.shape == (window_count(maps), 4) == (2 * (6 * 3 - 1), 4)
    # second map, window rows 1..3, column 0..1
    wins = [(y0, y1, x0, x1) for y0 in range(3) for y1 in range(y0 + 1, 4) for x0 in range(2)
            for x1 in range(x0 + 1, 3) if (y1 - y0, x1 - x0) != (3, 2)]
    k = wins.index((1, 3, 0, 1))
    ref = head(h, maps[1:2, :, 1:3, 0:1].astype(np.float64).mean((2, 3)))
    assert np.abs(got[len(wins) + k] - ref[0]).max() < 1e-5


def test_copy_detection_ranks_and_ivf_exactness() -> None:
    db = np.eye(4, dtype=np.float32)
    q = np.array([[0.9, 0.1, 0, 0], [0.6, 0.5, 0, 0], [0, 0, 0, 1]], dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    m = copy_detection(db, q, np.array([0, 1, 3]), ["a", "b", "a"])
    assert np.isclose(m["mAP"], (1 + 0.5 + 1) / 3) and np.isclose(m["precision_at_1"], 2 / 3)
    assert m["recall_at_10"] == 1.0 and m["mAP_by_group"] == {"a": 1.0, "b": 0.5}
    assert product_centroids(442) == 11 and product_centroids(1_000_000) == 1000
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    rows = ivf_recall(x, x[:20] + 0.01, [4], [1, 4])
    assert rows[0]["recall_at_10_vs_exact"][4] == 1.0 and rows[0]["recall_at_10_vs_exact"][1] < 1.0


def test_same_person_retrieval_ap_by_hand() -> None:
    # positions on a line: a0=0, a1=1, b0=2, b1=10, c0=3 (unlabelled: a distractor)
    db = np.array([[0.0], [1.0], [2.0], [10.0], [3.0]])
    m = identity_retrieval(db, ["a", "a", "b", "b", ""])
    # a0 ranks a1 first (AP 1); a1: a0 and b0 tie at 1, the lower id (a0) first (AP 1);
    # b0 ranks a1, c0 (tie at 1: lower id first), a0, b1 -> b1 at rank 4 (AP 1/4);
    # b1 ranks c0, b0 -> rank 2 (AP 1/2)
    assert np.isclose(m["mAP"], (1 + 1 + 0.25 + 0.5) / 4) and np.isclose(m["precision_at_1"], 0.5)
    assert m["n_queries"] == 4 and m["n_people"] == 2
    assert identity_retrieval(db, ["a", "a", "b", "", ""]) is None  # one person with two photos: nothing to rank
    names = ["deid/faces/orl_s01/1.pgm", "deid/faces/index.csv", "deid/scenes/eu_eu1.jpg", "skimage/astronaut"]
    assert person_labels([Original(n, None) for n in names]) == ["orl_s01", "", "", ""]
