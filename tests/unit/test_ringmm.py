"""protocols.ringmm: exact Z_2^64 products on float64 limbs, bit-identical to int64 matmul."""

import pytest
import torch

from protocols.ringmm import MERGE_CHUNK, limbs, ring_matmul

CHUNK = 2 * MERGE_CHUNK  # 512: two merge chunks (the shapes these tests have always used)

LOW, HIGH = -(2**63), 2**63 - 1


def _rand(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(LOW, HIGH, shape, dtype=torch.int64, generator=g)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 7, 5), (64, 1000, 40), (5, CHUNK, 3), (4, CHUNK + 1, 6),
                                   (2, 2000, 9)])
def test_equals_int64_matmul_on_random_operands(m: int, k: int, n: int) -> None:
    a, b = _rand(m, k, seed=m + k), _rand(k, n, seed=n + 7 * k)
    assert torch.equal(ring_matmul(a, b), a @ b)


@pytest.mark.parametrize("fill", [-1, LOW, HIGH, (1 << 22) - 1, 1 << 43])
def test_extreme_operands_at_the_longest_chunk(fill: int) -> None:
    """All limbs at their maximum (``-1``: every bit set) over 2 chunks: the float64 sums stay exact."""
    a = torch.full((3, 2 * CHUNK), fill, dtype=torch.int64)
    b = torch.full((2 * CHUNK, 4), -1, dtype=torch.int64)
    assert torch.equal(ring_matmul(a, b), a @ b)
    assert torch.equal(ring_matmul(b.T.contiguous(), a.T.contiguous()), b.T @ a.T)


def test_batched_left_operand() -> None:
    a, b = _rand(2, 3, 600, seed=1), _rand(600, 5, seed=2)
    assert torch.equal(ring_matmul(a, b), a @ b)


def test_limbs_recompose() -> None:
    t = _rand(1000, seed=3)
    lo, mid, hi = (x.to(torch.int64) for x in limbs(t))
    assert torch.equal(lo + (mid << 22) + (hi << 43), t)


def test_rejects_other_dtypes_and_shapes() -> None:
    with pytest.raises(TypeError):
        ring_matmul(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="inner"):
        ring_matmul(_rand(2, 3, seed=1), _rand(4, 2, seed=2))
