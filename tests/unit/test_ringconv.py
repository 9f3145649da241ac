"""Exact local kernels of the secure CNN: ringmm.ring_conv2d / limbs_pay and the local products of
protocols.nn_layers (dense conv, depthwise, linear) and protocols.arithmetic (matmul, conv2d) are
bit-identical to torch's int64 reference on random and extreme shares (every bit set, 2^63, 2^63 - 1)."""

import pytest
import torch
import torch.nn.functional as F

from protocols import arithmetic as A
from protocols import nn_layers as L
from protocols.ringmm import MERGE_CHUNK, limbs_pay, ring_conv2d, ring_mm

LOW, HIGH = -(2**63), 2**63 - 1
FILLS = [None, -1, LOW, HIGH, (1 << 22) - 1]


def _rand(*shape: int, seed: int, fill: int | None = None) -> torch.Tensor:
    if fill is not None:
        return torch.full(shape, fill, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(LOW, HIGH, shape, dtype=torch.int64, generator=g)


# (x shape, w shape, stride, padding, dilation): limb paths (1x1, strided 1x1, kxk with channel chunks,
# batch 2) and int64 fallbacks (few output positions, more than MERGE_CHUNK taps)
CONVS = [((1, 64, 24, 24), (48, 64, 1, 1), (1, 1), (0, 0), (1, 1)),
         ((2, 40, 12, 12), (40, 40, 1, 1), (2, 2), (0, 0), (1, 1)),
         ((1, 6, 33, 33), (32, 6, 3, 3), (2, 2), (0, 0), (1, 1)),
         ((1, 70, 10, 10), (40, 70, 3, 3), (1, 1), (1, 1), (1, 1)),
         ((2, 9, 14, 14), (24, 9, 3, 3), (1, 2), (2, 1), (2, 1)),
         ((1, 600, 12, 12), (40, 600, 1, 1), (1, 1), (0, 0), (1, 1)),
         ((1, 64, 3, 3), (200, 64, 1, 1), (1, 1), (0, 0), (1, 1)),
         ((2, 30, 4, 5), (100, 30, 1, 1), (2, 2), (0, 0), (1, 1)),
         ((1, 1, 26, 26), (30, 1, 23, 23), (1, 1), (0, 0), (1, 1))]


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("xs,ws,stride,padding,dilation", CONVS)
def test_ring_conv2d_equals_int64_conv2d(xs, ws, stride, padding, dilation, fill) -> None:
    x, w = _rand(*xs, seed=1, fill=fill), _rand(*ws, seed=2, fill=None if fill is None else -1)
    assert torch.equal(ring_conv2d(x, w, stride, padding, dilation), F.conv2d(x, w, None, stride, padding, dilation))


def test_limbs_pay_rule_on_model_shapes() -> None:
    """Weight-dominated products (3x3 maps at batch 1, linear at batch 1) stay on int64; the others go to limbs."""
    assert not limbs_pay(1152, 9) and not limbs_pay(1280, 9) and not limbs_pay(128, 1) and not limbs_pay(16, 2304)
    assert limbs_pay(96, 2304) and limbs_pay(32, 2304) and limbs_pay(24, 576) and limbs_pay(80, 36)
    assert limbs_pay(672, 36) and not limbs_pay(28, 36)
    assert MERGE_CHUNK // 9 >= 28  # a 3x3 conv chunk holds >= 28 input channels


def _conv_kernel_args(cin, cout, hw, k, groups, seed, fill):
    x = [_rand(1, cin, hw, hw, seed=seed + i, fill=fill) for i in range(2)]
    w = [_rand(cout, cin // groups, k, k, seed=seed + 2 + i, fill=None if fill is None else -1) for i in range(2)]
    return x + w


# real EfficientNet-Lite0 96 px layers: stem, 1x1 at 48/24/12/6/3 px, depthwise 3x3 / 5x5 strided
LAYERS = [(3, 32, 97, 3, 1, [2, 2]), (16, 96, 48, 1, 1, [1, 1]), (144, 24, 24, 1, 1, [1, 1]),
          (40, 240, 12, 1, 1, [1, 1]), (480, 80, 6, 1, 1, [1, 1]), (1152, 192, 3, 1, 1, [1, 1]),
          (96, 96, 49, 3, 96, [2, 2]), (144, 144, 27, 5, 144, [2, 2])]


@pytest.mark.parametrize("fill", [None, -1, LOW])
@pytest.mark.parametrize("cin,cout,hw,k,groups,stride", LAYERS)
def test_conv_local_kernels_equal_int64_reference(cin, cout, hw, k, groups, stride, fill) -> None:
    xa, xb, wa, wb = _conv_kernel_args(cin, cout, hw, k, groups, seed=cin + hw, fill=fill)
    local = L._conv_local(stride, [0, 0], [1, 1], groups, cin, wa.shape)
    ref = F.conv2d(xa, wa, None, stride, 0, 1, groups) + F.conv2d(xb, wb, None, stride, 0, 1, groups)
    assert torch.equal(local(xa, xb, wa, wb), ref)


@pytest.mark.parametrize("batch", [1, 20])
@pytest.mark.parametrize("fill", [None, -1, HIGH])
def test_linear_local_equals_int64_reference(batch, fill) -> None:
    xa, xb = (_rand(batch, 1280, seed=5 + i, fill=fill) for i in range(2))
    wa, wb = (_rand(128, 1280, seed=7 + i, fill=None if fill is None else -1) for i in range(2))
    assert torch.equal(L._linear_local(xa, xb, wa, wb), xa @ wa.T + xb @ wb.T)


@pytest.mark.parametrize("fill", [None, -1, LOW])
def test_arithmetic_local_products_equal_int64_reference(fill) -> None:
    for a_shape, b_shape in [((3, 40, 700), (700, 50)), ((2, 5, 30), (2, 30, 2)), ((64, 600), (600,)),
                             ((40, 33), (33, 40))]:
        a = _rand(*a_shape, seed=11, fill=fill)
        b = _rand(*b_shape, seed=12, fill=None if fill is None else -1)
        assert torch.equal(A._local_matmul(a, b), torch.matmul(a, b))


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 7, 5), (40, 256, 33), (5, 257, 70), (17, 1000, 64), (96, 64, 2304)])
def test_ring_mm_equals_int64_matmul(m, k, n, fill) -> None:
    a, b = _rand(m, k, seed=m + k, fill=fill), _rand(k, n, seed=n, fill=None if fill is None else -1)
    assert torch.equal(ring_mm(a, b), a @ b)
    assert torch.equal(ring_mm(b.T.contiguous(), a.T), b.T @ a.T)


def test_ring_mm_rejects_other_dtypes_and_shapes() -> None:
    with pytest.raises(TypeError):
        ring_mm(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError):
        ring_mm(_rand(2, 3, seed=1), _rand(4, 2, seed=2))
