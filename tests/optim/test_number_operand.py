"""number_operand (optim/_common.py): a multi-tensor mul/div by a 0-d tensor of the list's
dtype gives the bits of the same operation by the Python number, and Adam built on it stays
bit for bit torch.optim.Adam's in float32, where rounding the operand matters."""

from __future__ import annotations

import pytest
import torch

from handgrad import optim
from handgrad.optim._common import add_number_, number_operand


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_mul_and_div_by_the_operand_equal_those_by_the_number(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=generator, dtype=dtype) * 1e3
               for shape in [(7,), (3, 5), (), (33,)]]  # fmt: skip
    values = [0.999, 1 - 0.999**7, (1 - 0.95**3) ** 0.5, 1e-8, 3.0000001, 1 / 3]
    for value in values:
        operand = number_operand(value, tensors[0])
        assert isinstance(operand, torch.Tensor)
        assert operand.dtype == dtype
        for op in (torch._foreach_mul, torch._foreach_div):
            by_number, by_operand = op(tensors, value), op(tensors, operand)
            for a, b in zip(by_number, by_operand, strict=True):
                assert torch.equal(a, b), (op.__name__, value)
        added = [t.clone() for t in tensors]
        add_number_(added, value)
        for a, b in zip(torch._foreach_add(tensors, value), added, strict=True):
            assert torch.equal(a, b), ("add", value)


def test_other_dtypes_keep_the_number() -> None:
    assert number_operand(0.5, torch.zeros(2, dtype=torch.float16)) == 0.5
    assert number_operand(0.5, torch.zeros(2, dtype=torch.bfloat16)) == 0.5
    halves = [torch.full((3,), 0.1, dtype=torch.float16)]
    add_number_(halves, 1e-3)
    assert torch.equal(halves[0], torch.full((3,), 0.1, dtype=torch.float16) + 1e-3)


@pytest.mark.parametrize("decoupled", [False, True], ids=["L2", "decoupled"])
def test_adam_in_float32_is_bitwise_torchs_foreach(decoupled: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    shapes = [(10, 3), (3,), (1, 10), ()]
    ours = [torch.randn(shape, generator=generator) for shape in shapes]
    theirs = [p.clone() for p in ours]
    options = {"lr": 0.01, "betas": (0.8, 0.97), "weight_decay": 0.1,
               "decoupled_weight_decay": decoupled}  # fmt: skip
    mine = optim.Adam(ours, **options)
    reference = torch.optim.Adam(theirs, foreach=True, **options)
    for step in range(30):
        for params, optimizer in ((ours, mine), (theirs, reference)):
            for i, p in enumerate(params):
                p.grad = torch.cos(p * (i + 2) + step) * 10.0 ** (i - 2)
            optimizer.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b), step
