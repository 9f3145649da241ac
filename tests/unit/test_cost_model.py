"""The e2e benchmark's cost model and its per-step round/byte profiler (in-process parties)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.cost_model import CostModel, RoundProfiler, agreement, format_table


def test_cost_model_formula_and_fit():
    m = CostModel(compute_s=2.0, rounds=500, bytes_max_party=250_000_000)
    # 2 s + 500 x 5 ms (one-way delay per round) + 250 MB / 125 MB/s
    assert m.predict(10.0, 1000.0) == pytest.approx(2.0 + 2.5 + 2.0)
    assert m.predict(0.0, None) == pytest.approx(2.0)
    scale = m.fit_compute_scale(measured_s=5.0, rtt_ms=0.0, bandwidth_mbps=1000.0)
    assert scale == pytest.approx(1.5)  # (5 - 2 s on the wire) / 2 s in-process
    fitted = CostModel(2.0, 500, 250_000_000, scale)
    assert fitted.predict(0.0, 1000.0) == pytest.approx(5.0)
    assert fitted.predict(30.0, 1000.0) == pytest.approx(3.0 + 500 * 0.015 + 2.0)
    assert CostModel(4.0, 500, 250_000_000, scale).predict(0.0, 1000.0) == pytest.approx(6.0 + 2.0)
    assert m.fit_compute_scale(1.0, 0.0, 1000.0) == 0.0  # clipped, never negative
    assert agreement(1.2, 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        m.predict(-1.0, 1000.0)
    with pytest.raises(ValueError):
        m.predict(1.0, 0.0)


def test_profiler_attributes_every_round_and_byte_of_a_secure_query():
    from client.model import split_model
    from client.recipes import build_model
    from index import build_index, share_index
    from protocols.nn import SecureModel
    from protocols.ring import DEFAULT_FP
    from protocols.search import secure_search
    from protocols.sharing import from_pair, share_fixed
    from protocols.simulate import make_parties, run_parties

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    shares = share_index(build_index(x, None, 10), DEFAULT_FP)
    arch, weights = split_model(build_model("tiny", 16, 8), [3, 16, 16])
    pairs = share_fixed(torch.rand(1, 3, 16, 16, dtype=torch.float64), DEFAULT_FP)
    prof = RoundProfiler()
    parties = [prof.attach(p) for p in make_parties(seed=3)]

    def body(party, w, s, pair):
        feats = SecureModel.from_shares(party, arch, w).forward(from_pair(party, pair, DEFAULT_FP.frac_bits))
        return secure_search(party, feats, s, 3, nprobe=2)

    run_parties(body, [(weights[i], shares[i], pairs[i]) for i in range(3)], parties=parties)
    tot = prof.totals()
    assert tot["rounds"] == parties[0].comm.stats.rounds
    assert tot["bytes_per_party"] == [p.comm.stats.bytes_sent for p in parties]
    steps = [r["step"] for r in prof.by_step()]
    assert steps[:2] == ["cnn: conv2d", "cnn: relu"]
    for s in ("search: centroid distances", "search: top-nprobe", "search: one-hot of the probes",
              "search: oblivious fetch", "search: bucket distances", "search: top-k"):
        assert s in steps
    rows = {r["step"]: r for r in prof.by_step()}
    assert rows["search: oblivious fetch"]["rounds"] == 1
    assert sum(r["rounds"] for r in rows.values()) == tot["rounds"]
    assert "comparison" in {r["operation"] for r in prof.table() if r["step"] == "search: top-k"}
    assert "search: top-k" in format_table(prof.by_step())
