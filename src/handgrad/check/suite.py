"""run_checks: every handgrad module, loss and a few deep networks against torch.nn + autograd.

For each case a torch.nn module is built, its handgrad twin made with
:func:`handgrad.nn.from_torch`, and both run on the same input from the same RNG state:

- forward outputs are compared;
- the same random upstream gradient g goes down both: autograd on the torch module, the
  hand-written ``backward`` on the twin; the input gradients and every parameter gradient
  are compared;
- :func:`handgrad.check.check_module` also checks the twin in float64 against central
  finite differences.

Errors are max absolute and normwise relative, max|handgrad − torch| / max|torch|.
A row passes when every relative error is within 1e-10 (float64) or 1e-4 (float32) — or the
absolute error is below a floor for all-but-zero references — and finite differences agree.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from handgrad.check.module import check_module
from handgrad.nn import TorchResidual, from_torch
from handgrad.tables import format_table, markdown_table

# (relative, absolute floor) per dtype: float64 to a few hundred ulps, float32 to 1e-4.
TOLERANCES = {torch.float64: (1e-10, 1e-13), torch.float32: (1e-4, 1e-6)}


@dataclass(frozen=True)
class CheckRow:
    """One case: errors of handgrad vs torch (forward, input grad, parameter grads) and FD."""

    name: str
    forward_abs: float
    forward_rel: float
    input_abs: float
    input_rel: float
    param_abs: float | None
    param_rel: float | None
    fd_rel: float
    passed: bool


@dataclass(frozen=True)
class CheckReport:
    """The rows of :func:`run_checks`; ``passed`` only if every row passed."""

    device: str
    dtype: torch.dtype
    seed: int
    rows: list[CheckRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The header and the rows as text cells (what the text and Markdown tables show)."""
        header = ["module", "forward", "input grad", "param grads", "finite diff", "result"]

        def err(abs_err: float | None, rel_err: float | None) -> str:
            return "-" if abs_err is None or rel_err is None else f"{rel_err:.1e} ({abs_err:.1e})"

        body = [
            [
                row.name,
                err(row.forward_abs, row.forward_rel),
                err(row.input_abs, row.input_rel),
                err(row.param_abs, row.param_rel),
                f"{row.fd_rel:.1e}",
                "pass" if row.passed else "FAIL",
            ]
            for row in self.rows
        ]
        return header, body

    def summary(self) -> str:
        failed = sum(not row.passed for row in self.rows)
        dtype = str(self.dtype).removeprefix("torch.")
        verdict = "all passed" if not failed else f"{failed} FAILED"
        return (
            f"{len(self.rows)} checks on {self.device}, {dtype}, seed {self.seed}: {verdict}.\n"
            "Errors: relative (absolute) vs torch.nn + autograd; finite diff: relative, in float64."
        )

    def to_text(self) -> str:
        """An aligned table for the terminal, with a summary line."""
        return "\n".join([format_table(*self.table()), "", self.summary()])

    def to_markdown(self) -> str:
        """A GitHub-flavoured Markdown table, with the summary below it."""
        return "\n".join([markdown_table(*self.table()), "", self.summary()])


@dataclass(frozen=True)
class _Case:
    name: str
    build: Callable[[], torch.nn.Module]  # the torch.nn reference, in float64 on CPU
    shape: tuple[int, ...]  # the input's
    target: Callable[[Tensor], Tensor] | None = None  # loss cases: target from prediction
    scale: float = 1.0  # input spread
    cpu_only: bool = False  # torch draws dropout masks differently off the CPU
    tokens: int = 0  # > 0: the input is token ids in [0, tokens) (no input gradient)


def _class_indices(x: Tensor) -> Tensor:
    n_classes = x.shape[1] if x.dim() > 1 else x.shape[0]
    shape = x.shape[:1] + x.shape[2:] if x.dim() > 1 else ()
    return torch.randint(0, n_classes, shape, device=x.device)


def _with_ignored(x: Tensor) -> Tensor:
    target = _class_indices(x)
    target[0] = -1  # the ignore_index of that case
    return target


def _probabilities(x: Tensor) -> Tensor:
    return torch.softmax(torch.randn_like(x), dim=1)


def _unit_interval(x: Tensor) -> Tensor:
    return torch.rand_like(x)


def _like(x: Tensor) -> Tensor:
    return torch.randn_like(x)


def _cases() -> list[_Case]:
    nn = torch.nn
    cases = [
        _Case("Linear(5, 4)", lambda: nn.Linear(5, 4), (6, 5)),
        _Case("Linear(5, 4, bias=False)", lambda: nn.Linear(5, 4, bias=False), (6, 5)),
        _Case("Linear(5, 4) on (2, 3, 5)", lambda: nn.Linear(5, 4), (2, 3, 5)),
        _Case("Linear(3, 2) on one sample", lambda: nn.Linear(3, 2), (3,)),
        _Case("ReLU", nn.ReLU, (4, 7)),
        _Case("Sigmoid", nn.Sigmoid, (4, 7), scale=4.0),
        _Case("Sigmoid, |x| up to 800", nn.Sigmoid, (4, 7), scale=300.0),
        _Case("Tanh", nn.Tanh, (4, 7)),
        _Case("LeakyReLU(0.1)", lambda: nn.LeakyReLU(0.1), (4, 7)),
        _Case("ELU(0.7)", lambda: nn.ELU(0.7), (4, 7), scale=2.0),
        _Case("GELU()", nn.GELU, (4, 7), scale=2.0),
        _Case("GELU('tanh')", lambda: nn.GELU("tanh"), (4, 7), scale=2.0),
        _Case("Softplus(2, threshold=5)", lambda: nn.Softplus(2.0, 5.0), (4, 7), scale=3.0),
        _Case("Identity", nn.Identity, (4, 7)),
        _Case("Dropout(0.3), training", lambda: nn.Dropout(0.3), (8, 9), cpu_only=True),
        _Case("Dropout(0.3), eval", lambda: nn.Dropout(0.3).eval(), (8, 9)),
        _Case("Flatten()", nn.Flatten, (3, 2, 4)),
    ]
    ce_weight = torch.tensor([0.5, 1.5, 1.0, 0.8], dtype=torch.float64)
    bce_weight = torch.tensor([0.2, 1.0, 0.7], dtype=torch.float64)
    pos_weight = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    for r in ("mean", "sum", "none"):
        cases += [
            _Case(f"MSELoss({r})", partial(nn.MSELoss, reduction=r), (5, 3), _like),
            _Case(f"L1Loss({r})", partial(nn.L1Loss, reduction=r), (5, 3), _like),
            _Case(
                f"HuberLoss({r}, delta=0.5)",
                partial(nn.HuberLoss, reduction=r, delta=0.5),
                (5, 3),
                _like,
            ),
            _Case(
                f"CrossEntropyLoss({r}), indices",
                partial(nn.CrossEntropyLoss, reduction=r),
                (6, 4),
                _class_indices,
                scale=3.0,
            ),
            _Case(
                f"CrossEntropyLoss({r}), soft targets, smoothing",
                partial(nn.CrossEntropyLoss, reduction=r, label_smoothing=0.1),
                (6, 4),
                _probabilities,
                scale=3.0,
            ),
            _Case(
                f"CrossEntropyLoss({r}) on (N, C, d), all options",
                partial(
                    nn.CrossEntropyLoss,
                    weight=ce_weight,
                    ignore_index=-1,
                    reduction=r,
                    label_smoothing=0.2,
                ),
                (3, 4, 2),
                _with_ignored,
                scale=3.0,
            ),
            _Case(
                f"BCEWithLogitsLoss({r})",
                partial(nn.BCEWithLogitsLoss, reduction=r),
                (5, 3),
                _unit_interval,
                scale=3.0,
            ),
            _Case(
                f"BCEWithLogitsLoss({r}), weight, pos_weight",
                partial(
                    nn.BCEWithLogitsLoss, weight=bce_weight, reduction=r, pos_weight=pos_weight
                ),
                (5, 3),
                _unit_interval,
                scale=3.0,
            ),
        ]
    cases += [
        _Case(
            "classroom net 1-100-1, ReLU, Dropout(0.1)",
            lambda: nn.Sequential(nn.Linear(1, 100), nn.ReLU(), nn.Dropout(0.1), nn.Linear(100, 1)),
            (16, 1),
            scale=2.0,
            cpu_only=True,
        ),
        _Case(
            "deep net, depth 6: ReLU/Tanh/Sigmoid/GELU/LeakyReLU",
            lambda: _mlp(
                [6, 16, 16, 16, 16, 16, 3],
                [nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(), nn.LeakyReLU(0.05)],
            ),
            (8, 6),
        ),
        _Case(
            "deep net, Flatten + depth 6: ELU/Softplus/GELU-tanh",
            lambda: nn.Sequential(
                nn.Flatten(),
                _mlp(
                    [6, 12, 12, 12, 12, 12, 4],
                    [nn.ELU(), nn.Softplus(), nn.GELU("tanh"), nn.Identity(), nn.Tanh()],
                ),
            ),
            (5, 2, 3),
        ),
        _Case(
            "residual net: nested Sequential, Residual blocks (identity, projection)",
            lambda: nn.Sequential(
                nn.Linear(4, 8),
                TorchResidual(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))),
                TorchResidual(nn.Sequential(nn.Linear(8, 6), nn.GELU()), nn.Linear(8, 6)),
                nn.Sequential(nn.ReLU(), nn.Linear(6, 2)),
            ),
            (7, 4),
        ),
    ]
    cases += _convolutional_cases()
    return cases + _transformer_cases()


def _transformer_cases() -> list[_Case]:
    """Embeddings, normalisation, softmax, attention (in the encoder layer) and a GPT."""
    nn = torch.nn
    from handgrad.nn import TorchGPT  # (an import here keeps this addition in one place)

    def encoder(**kwargs: object) -> Callable[[], torch.nn.Module]:
        return lambda: nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, **kwargs)  # type: ignore[arg-type]

    return [
        _Case("Embedding(11, 4)", lambda: nn.Embedding(11, 4), (3, 5), tokens=11),
        # The norms follow a Linear: check_module's upstream gradient is drawn from the seed
        # the input was drawn from, so g ∝ x, and a scale-invariant layer's dx is then ~0.
        _Case(
            "Linear + LayerNorm(6)",
            lambda: nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6)),
            (4, 3, 6),
        ),
        _Case(
            "Linear + LayerNorm((3, 6), bias=False)",
            lambda: nn.Sequential(nn.Linear(6, 6), nn.LayerNorm((3, 6), bias=False)),
            (4, 3, 6),
        ),
        _Case(
            "Linear + RMSNorm(6)", lambda: nn.Sequential(nn.Linear(6, 6), nn.RMSNorm(6)), (4, 3, 6)
        ),
        _Case(
            "Linear + RMSNorm(6, eps=0.1, no affine)",
            lambda: nn.Sequential(nn.Linear(6, 6), nn.RMSNorm(6, 0.1, False)),
            (4, 6),
        ),
        _Case("SiLU", nn.SiLU, (4, 7), scale=3.0),
        _Case("Softmax(dim=1)", lambda: nn.Softmax(1), (3, 5, 2), scale=3.0),
        _Case("LogSoftmax(dim=-1)", lambda: nn.LogSoftmax(-1), (4, 7), scale=3.0),
        _Case("TransformerEncoderLayer(8, 2), post-norm, relu", encoder(), (5, 3, 8)),
        _Case(
            "TransformerEncoderLayer(8, 2), pre-norm, gelu, batch_first",
            encoder(activation="gelu", norm_first=True, batch_first=True),
            (3, 5, 8),
        ),
        _Case(
            "GPT: 2 blocks of causal self-attention and MLP, tied head",
            lambda: TorchGPT(13, 8, n_layer=2, n_head=2, d_model=8),
            (3, 8),
            tokens=13,
        ),
    ]


def _convolutional_cases() -> list[_Case]:
    """Convolutions, pooling, normalization, channel dropout, a CNN and a ResNet block."""
    nn = torch.nn

    def basic_block() -> torch.nn.Module:
        block = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
        )  # fmt: skip
        return nn.Sequential(TorchResidual(block), nn.ReLU())

    return [
        _Case("Conv1d(3, 4, 3, stride=2, padding=1)", lambda: nn.Conv1d(3, 4, 3, 2, 1), (2, 3, 9)),
        _Case("Conv2d(3, 4, 3, padding=1)", lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 6)),
        _Case(
            "Conv2d depthwise, stride 2, dilation 2, reflect",
            lambda: nn.Conv2d(4, 8, 3, 2, 2, 2, groups=4, padding_mode="reflect"),
            (2, 4, 7, 6),
        ),
        _Case(
            "Conv2d(2, 3, 4, padding='same', circular)",
            lambda: nn.Conv2d(2, 3, 4, padding="same", padding_mode="circular"),
            (2, 2, 5, 6),
        ),
        _Case(
            "ConvTranspose2d(4, 2, 3, stride 2, output_padding 1, groups 2)",
            lambda: nn.ConvTranspose2d(4, 2, 3, 2, 1, 1, groups=2),
            (2, 4, 3, 4),
        ),
        _Case(
            "MaxPool2d(3, 2, 1, ceil_mode)",
            lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
            (2, 3, 7, 6),
        ),
        _Case(
            "AvgPool2d(3, 2, 1, ceil_mode, exclude pad)",
            lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            (2, 3, 7, 6),
        ),
        _Case("AdaptiveAvgPool2d((2, 3))", lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 5, 7)),
        _Case("BatchNorm1d(4), training", lambda: _drawn(nn.BatchNorm1d(4)), (6, 4), scale=2.0),
        _Case(
            "BatchNorm2d(3), training", lambda: _drawn(nn.BatchNorm2d(3)), (3, 3, 4, 4), scale=2.0
        ),
        _Case(
            "BatchNorm2d(3, momentum=None), eval",
            lambda: _drawn(nn.BatchNorm2d(3, momentum=None)).eval(),
            (3, 3, 4, 4),
        ),
        _Case("GroupNorm(2, 4)", lambda: _drawn(nn.GroupNorm(2, 4)), (3, 4, 3, 3), scale=2.0),
        _Case("Dropout2d(0.3), training", lambda: nn.Dropout2d(0.3), (4, 5, 3, 3), cpu_only=True),
        _Case(
            "CNN: 2 x (conv, batchnorm, relu, maxpool), linear",
            lambda: nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1, bias=False),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 8, 3, padding=1, bias=False),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(8 * 2 * 2, 5),
            ),
            (4, 1, 8, 8),
        ),
        _Case("ResNet basic block (Residual)", basic_block, (2, 4, 5, 5)),
    ]


def _drawn(norm: torch.nn.Module) -> torch.nn.Module:
    """A normalization layer with γ, β (and running statistics) drawn at random: away from
    the special 1 and 0, and drawn before the input, so that the input is not the upstream
    gradient's draw (a gradient ∝ x, along which a normalization's output does not move)."""
    with torch.no_grad():
        for name, tensor in norm.named_parameters():
            if name == "weight":
                tensor.uniform_(0.5, 1.5)
            else:
                tensor.uniform_(-1.0, 1.0)
        for name, buffer in norm.named_buffers():
            if name == "running_mean":
                buffer.uniform_(-1.0, 1.0)
            elif name == "running_var":
                buffer.uniform_(0.5, 2.0)
    return norm


def _mlp(widths: list[int], activations: list[torch.nn.Module]) -> torch.nn.Sequential:
    """Linear layers of the given widths with the activations between them."""
    layers: list[torch.nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if index < len(activations):
            layers.append(activations[index])
    return torch.nn.Sequential(*layers)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Within: torch's RNG (CPU, and the device's) seeded; outside: as it was."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)  # cheaper than torch.manual_seed
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


def _errors(got: Tensor, expected: Tensor) -> tuple[float, float]:
    """(max |got − expected|, that divided by max |expected|), in float64."""
    if got.numel() == 0:
        return 0.0, 0.0
    abs_err = float((got.double() - expected.double()).abs().max())
    scale = float(expected.double().abs().max())
    return abs_err, (abs_err / scale if scale > 0 else abs_err)


def _run_case(case: _Case, device: torch.device, dtype: torch.dtype, seed: int) -> CheckRow:
    rtol, atol = TOLERANCES[dtype]
    with _seeded(seed, device):
        reference = case.build().to(device=device, dtype=dtype)
        twin = from_torch(reference)
        if case.tokens:
            x = torch.randint(0, case.tokens, case.shape, device=device)
        else:
            x = (torch.randn(case.shape, dtype=torch.float64) * case.scale).to(device, dtype)
        target = None if case.target is None else case.target(x)

    def forward(module: torch.nn.Module, inp: Tensor) -> Tensor:
        with _seeded(seed + 1, device):  # the same dropout mask for both
            out: Tensor = module(inp) if target is None else module(inp, target)
        return out

    # torch.nn + autograd
    x_leaf = x.clone().requires_grad_(not case.tokens)
    expected_out = forward(reference, x_leaf)
    generator = torch.Generator(device).manual_seed(seed + 2)
    upstream = torch.randn(expected_out.shape, generator=generator, dtype=dtype, device=device)
    params = list(reference.parameters())
    leaves = params if case.tokens else [x_leaf, *params]
    expected_grads = torch.autograd.grad(expected_out, leaves, upstream)
    if case.tokens:
        expected_grads = (torch.zeros(()), *expected_grads)  # token ids: no input gradient

    # handgrad
    with torch.no_grad():
        got_out = forward(twin, x.clone())
        got_input = twin.backward(upstream)

    missing = (float("inf"), float("inf"))  # a gradient the backward did not produce
    errors = [
        _errors(got_out, expected_out.detach()),
        (0.0, 0.0)
        if case.tokens
        else missing
        if got_input is None
        else _errors(got_input, expected_grads[0]),
    ]
    param_errors = [
        _errors(param.grad, expected)
        for param, expected in zip(twin.parameters(), expected_grads[1:], strict=True)
        if param.grad is not None
    ]
    if len(param_errors) != len(params):
        param_errors.append(missing)
    param_abs = max((e[0] for e in param_errors), default=None)
    param_rel = max((e[1] for e in param_errors), default=None)
    errors += param_errors

    with _seeded(seed, device):
        fd = check_module(twin, x, target=target, seed=seed)
    fd_rel = max((t.fd_rel for t in fd.tensors), default=0.0)
    passed = fd.passed and all(rel <= rtol or abs_ <= atol for abs_, rel in errors)
    return CheckRow(
        name=case.name,
        forward_abs=errors[0][0],
        forward_rel=errors[0][1],
        input_abs=errors[1][0],
        input_rel=errors[1][1],
        param_abs=param_abs,
        param_rel=param_rel,
        fd_rel=fd_rel,
        passed=passed,
    )


def run_checks(
    *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0
) -> CheckReport:
    """Check every handgrad module, loss (all reductions) and deep networks against torch.

    Returns a :class:`CheckReport` (``.rows``, ``.passed``, ``.to_text()``,
    ``.to_markdown()``). Raises ``ValueError`` for a dtype other than float32/float64 or a
    device that is not available. Dropout in training mode is compared on the CPU only,
    where torch draws its mask the way handgrad does.
    """
    if dtype not in TOLERANCES:
        raise ValueError(f"run_checks: dtype must be torch.float32 or torch.float64, got {dtype}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run_checks: device {str(device)!r} requested but CUDA is not available")
    cases = [case for case in _cases() if device.type == "cpu" or not case.cpu_only]
    rows = [_run_case(case, device, dtype, seed) for case in cases]
    return CheckReport(device=str(device), dtype=dtype, seed=seed, rows=rows)
