"""protocols.checked_nn: checked CNN inference (conv, depthwise conv, BN, ReLU, ReLU6, pooling, residual,
linear) equals plaintext torch within the fixed-point tolerance, passes its proof, and a server that
corrupts one message anywhere in it is rejected before any output is revealed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from client.model import Residual, describe_model, split_model
from protocols.checked_nn import checked_forward
from protocols.dzk import ProductLog, ProofRejected, verify_products
from protocols.layers import plain_forward
from protocols.party import Party
from protocols.sharing import from_pair, reveal, share_fixed
from protocols.simulate import run_parties

TOLERANCE = 2e-3  # fixed point at 16 fractional bits through 8 layers, one ulp per truncation


def _model() -> nn.Module:
    g = torch.Generator().manual_seed(5)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU6(),
                      Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU6())),
                      nn.Conv2d(4, 6, 1), nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(6, 5))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        m[1].running_mean.copy_(torch.randn(4, generator=g) * 0.1)
        m[1].running_var.copy_(torch.rand(4, generator=g) + 0.5)
    return m.eval()


def _run(model: nn.Module, image: torch.Tensor, bad: int | None = None, index: int = -1):
    arch, per_server = split_model(model, tuple(image.shape[1:]))
    xs = share_fixed(image)

    def body(party: Party, weights, px):
        if party.id == bad:
            send, sent = party.comm._send, [0]

            def corrupt(to: int, t: torch.Tensor) -> None:
                if sent[0] == index:
                    t = t.clone()
                    t.view(-1)[0] += 1 << 12
                sent[0] += 1
                send(to, t)

            party.comm._send = corrupt
        log = ProductLog(party)
        w = {k: from_pair(party, v, arch["frac_bits"]) for k, v in weights.items()}
        out = checked_forward(arch, w, from_pair(party, px, arch["frac_bits"]), log)
        verify_products(log)
        return reveal(out), party.comm.stats.messages_sent

    return run_parties(body, [[per_server[i], xs[i]] for i in range(3)])


def test_a_checked_cnn_matches_plaintext_torch():
    model = _model()
    image = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = _run(model, image)[0][0].double() / 2**16
    arch, params = describe_model(model, (3, 12, 12))
    want = plain_forward(arch, params, image)
    assert torch.allclose(got, model.double()(image), atol=TOLERANCE)
    assert torch.allclose(got, want, atol=TOLERANCE)


def test_a_corrupted_message_anywhere_in_the_cnn_is_rejected():
    model = _model()
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sends = _run(model, image)[1][1] - 2  # the reveal's two messages are not proved
    for index in range(0, sends, max(1, sends // 6)):
        with pytest.raises(Exception) as exc:
            _run(model, image, bad=1, index=index)
        cause = exc.value.__cause__
        assert isinstance(cause, ProofRejected) and 1 in cause.suspects, (index, exc.value)
