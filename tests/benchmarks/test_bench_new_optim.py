"""benchmarks/bench_new_optim.py times like against like, and its quick run works."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_new_optim

# Small stand-ins for the benchmark's layouts: separate tensors, one of LARGE_TENSOR_ELEMENTS
# or more (the bodies that update a large tensor on its own), and the flat layout.
SHAPES = {"separate": [(6, 5), (5,), (3, 2, 2)], "large": [(70_000,), (300, 300)],
          "flat": [(10, 1), (10,), (1, 10), (1,)]}  # fmt: skip


@pytest.mark.parametrize("layout", sorted(SHAPES))
@pytest.mark.parametrize("name", sorted(bench_new_optim.OPTIMIZERS))
def test_both_sides_take_the_same_steps(name: str, layout: str) -> None:
    """The two optimizers the benchmark times start alike and stay bit for bit together
    over three steps. Some references fold weight decay into ``p.grad`` in place (handgrad
    leaves it alone), so the fixed gradients are restored before each step here; the
    benchmark itself times the same work either way."""
    both = bench_new_optim.pair(name, SHAPES[layout], flat=layout == "flat")
    if both is None:
        pytest.skip(f"{bench_new_optim.OPTIMIZERS[name][0]} is not installed")
    (ours, ours_step), (reference, reference_step) = both
    ours_params = [p for g in ours.param_groups for p in g["params"]]
    reference_params = [p for g in reference.param_groups for p in g["params"]]
    grads = [p.grad.clone() for p in ours_params]  # type: ignore[union-attr]
    for _ in range(3):
        for params in (ours_params, reference_params):
            for p, g in zip(params, grads, strict=True):
                p.grad.copy_(g)  # type: ignore[union-attr]
        ours_step()
        reference_step()
    moved = False
    for p, q in zip(ours_params, reference_params, strict=True):
        assert torch.equal(p, q)
        moved = moved or not torch.equal(p, torch.zeros_like(p))
    assert moved


def test_quick_run_prints_a_row_per_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_new_optim.main(["--quick", "--only", "Lion,SOAP", "--layouts", "flat"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| Lion") or
            line.startswith("| SOAP")]  # fmt: skip
    assert len(rows) == 2
    assert "Using decoupled" not in out


def test_unknown_names_are_refused() -> None:
    with pytest.raises(SystemExit):
        bench_new_optim.main(["--only", "Lino"])
