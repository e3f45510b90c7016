"""float16 and bfloat16: every activation and loss, forward and backward, as exact as torch.

Each module runs through its public API (``module(...)`` then ``module.backward(...)``) on
half-precision inputs; its torch.nn twin runs on the same inputs (forward, then autograd).
Both are measured against a float64 reference computed from those same half inputs —
closed-form float64 formulas for the activations, written where float64 itself keeps its
digits (tanh′ = 1/cosh², the tanh-GELU as x·σ(2u)); for the losses torch's float64 module
and autograd, except BCEWithLogits's gradient, whose float64 σ(x) − 1 cancels (see
:func:`_bce_slope`). Errors are in ulps of the half dtype at the reference value: its
spacing there — below the smallest normal number the subnormal spacing, above the largest
finite number the spacing at it, and no error for ±inf where the reference rounds to it; any
other result that is inf or NaN where the reference is not (or the reverse) is an infinite
error.

The criterion, element by element (a reduced loss is one element, a gradient is checked
element by element):

    error(ours) ≤ max(error(torch), 1 ulp)              where the reference is normal,
    error(ours) ≤ max(error(torch), 1 ulp) + 1 ulp      where it is subnormal (or 0);

and where an input is ±inf or NaN, wherever ours or torch's result is inf or NaN, both are
the same. So ours is never worse than torch on the same inputs, and never more than one
rounding step off where torch is better than that (both compute in float32 and round once;
two float32 values a hair apart may round to neighbouring halves). The subnormal allowance:
there the spacing is fixed (2⁻²⁴ in float16) and as fine as float32's own resolution of the
values near 1 that a kernel computes from (σ(x), tanh(x), 1 + tanh u), so both results
carry float32's error, and ours may be one spacing further than torch's where the two
float32 formulas differ (at most ~1.5 spacings in the tables below, in tails such as
σ′(16.6) and GELU-tanh(−5.1) in float16).

Softmax, log-softmax, LayerNorm and RMSNorm couple the entries of a row, which count as
finite inputs only where the whole row is; their inputs are rows of logits over the scales
below, rows on a large offset (LayerNorm's x − μ cancels), rows of 256, and rows with ±inf
or NaN; their parameters' gradients are checked too. GroupNorm and BatchNorm (training,
eval, without affine) normalise channels on offsets 3·4^c, sample i scaled by 2^(i−4) (the
mean cancels in x − μ); BatchNorm's updated running statistics are checked as well.

The inputs: for the activations every value of the dtype (all finite ones, subnormals and
both zeros included, ±inf and NaN), with an upstream gradient of 1 and of random halves; for
the losses predictions and targets spread over the dtype's magnitudes (uniform over bit
patterns, so every binade is sampled), pairs that are equal, one ulp apart and around
Huber's kink, ±inf and NaN; logits rows from scale 2⁻¹⁶ to 2¹⁰, ±inf and NaN logits, ignored
targets, class weights, label smoothing and probability targets; each reduction.

Every comparison with torch runs on each device of tests/conftest.py (torch's own kernels
there are the bar). ``python -m tests.nn.test_half_precision`` prints the largest
errors, ours and torch's, per case and reduction (finite inputs; torch 2.13 on CPU). The
cases where either is worst:

    max ulps, ours / torch            float16                     bfloat16
                                 forward     backward        forward     backward
    GELU                        0.5 / 2.04  0.52 / 2.3      0.5 / 255   0.5 / 7.52
    GELU(tanh)                  1.7 / 2.51  24.5 / 30.4     256 / 256   inf / inf
    Sigmoid                     0.5 / 0.5   2.38 / 2040     24.3 / 24.3 256 / 256
    Tanh                        0.5 / 0.5   2.45 / 2050     0.5 / 0.5   256 / 256
    BCEWithLogitsLoss, none     4.21 / 2050 1.09 / 1570     223 / 223   255 / 255
    BCEWithLogits(w, p_w), sum  0.46 / 0.72 0.51 / 19200    0.49 / 1.2  0.5 / 6.3e37
    CrossEntropyLoss, none      0.5 / 15.4  0.5 / 19.4      0.5 / 189   0.5 / 239
    CE(probabilities), none     0.5 / 1.85  0.5 / 106       0.5 / 1.21  0.5 / 283
    MSELoss, none               0.5 / 1.79  0.5 / 1.3       0.5 / 1.56  0.5 / 1.1
    Softmax                     0.5 / 0.5   0.5 / 510       0.5 / 0.5   237 / 400
    LogSoftmax                  0.51 / 1870 0.5 / 37.5      256 / 256   0.5 / 62.3
    LayerNorm (dx, dγ, dβ)      0.56 / 0.5  2.28 / 14500    0.5 / 0.5   1.24 / 32300
    RMSNorm                     0.5 / 1.8e5 0.5 / 2.0e6     0.5 / 63500 0.5 / 1.0e6
    SiLU                        0.5 / 0.5   0.5 / 0.5       245 / 245   249 / 249
    GroupNorm                   0.5 / 0.5   0.5 / 86.7      0.5 / 0.5   0.5 / 362
    BatchNorm2d (training)      0.5 / 139   0.5 / 199       0.5 / 123   0.5 / 244
    (ReLU, LeakyReLU, ELU, Softplus, L1Loss, HuberLoss: ≤ 0.5 for both, but Huber's
    backward, torch's up to 1.21, and its float16 sum forward, torch's 1.11.)

Where ours is more than a few ulps off, torch's is as far: float32's own limits, the same
for both. In bfloat16 (float32's exponent range) σ(x) (and SiLU's xσ(x)) is 0 below
x = −88.7, 1 − σ(x) above x = 17, 1 − |tanh x| above |x| ≈ 9, 1 + tanh u below x ≈ −6
(GELU(tanh)), and BCE's (1 − t)x + softplus(−x) cancels to 0 for t = 0, x ≪ 0, where the
true values are normal bfloat16 numbers (256 ulps: a result of 0 for a nonzero
reference); 0.134x² overflows beyond |x| ≈ 5e19, making GELU(tanh)'s gradient
0 · inf = NaN, as torch's. In float16: the subnormal outputs described above and the same
cancellations, milder (1 + tanh u for x ∈ [−5, −4], 15 ulps, BCE at x = −9.6, 4 ulps where
torch gives 0). Torch's larger
errors: sigmoid's and tanh's gradients from the rounded half output (1 − y is 0 once y
rounds to 1: from x = 8.3 in float16), GELU's 1 + erf(x/√2) cancelling for x ≪ 0, BCE and
cross-entropy composed of half-precision operations, each rounded, and the normalisations'
statistics in half precision (mean(x²) underflows in float16 for a row at scale 2⁻⁸; at
2⁻¹⁶ torch's RMSNorm gives 0.17 for 0.0019). Softmax's and log-softmax's bfloat16 figures
are float32's too: y(g − ⟨g, y⟩) is 0 where y rounds to 1 and log y to 0.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor

import handgrad.nn as hn
from handgrad.nn import functional as F
from handgrad.nn.functional import _common
from handgrad.nn.per_sample import per_sample_gradients

HALF = [pytest.param(torch.float16, id="float16"), pytest.param(torch.bfloat16, id="bfloat16")]
HALF_DTYPES = (torch.float16, torch.bfloat16)
CPU = torch.device("cpu")
_MANTISSA_BITS = {torch.float16: 11, torch.bfloat16: 8}  # the implicit bit included

# ----------------------------------------------------------------------------- error in ulps


def ulp_error(got: Tensor, reference: Tensor, dtype: torch.dtype) -> Tensor:
    """|got − reference| in ulps of ``dtype`` at ``reference`` (float64; see the module doc)."""
    info = torch.finfo(dtype)
    magnitude = reference.abs().clamp(min=info.tiny, max=info.max)
    _, exponent = torch.frexp(magnitude)  # magnitude = m · 2^exponent, ½ ≤ m < 1
    ulp = torch.ldexp(torch.ones_like(magnitude), exponent - _MANTISSA_BITS[dtype])
    got = got.double()
    error = (got - reference).abs() / ulp
    # a finite reference beyond the dtype's range rounds to ±inf: then that is the answer
    rounded = reference.to(dtype).double()
    overflow = reference.isfinite() & rounded.isinf() & (got == rounded)
    error = torch.where(same_values(got, reference) | overflow, 0.0, error)
    return torch.where(error.isnan(), math.inf, error)


def same_values(got: Tensor, expected: Tensor) -> Tensor:
    """Elementwise: equal values, or both NaN."""
    return (got == expected) | (got.isnan() & expected.isnan())


@dataclass
class Errors:
    """Ours and torch's results for one part (forward or backward) of one case, their ulp
    errors, where every input was finite and where the reference is subnormal (or 0)."""

    what: str
    ours: Tensor
    theirs: Tensor
    ours_error: Tensor
    theirs_error: Tensor
    finite: Tensor
    subnormal: Tensor

    @classmethod
    def measure(
        cls, what: str, ours: Tensor, theirs: Tensor, reference: Tensor, finite: Tensor
    ) -> Errors:
        dtype = theirs.dtype
        assert ours.dtype == dtype, f"{what}: dtype {ours.dtype}, torch's {dtype}"
        assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, torch's {theirs.shape}"
        return cls(
            what, ours.reshape(-1), theirs.reshape(-1),
            ulp_error(ours, reference, dtype).reshape(-1),
            ulp_error(theirs, reference, dtype).reshape(-1),
            finite.expand(ours.shape).reshape(-1),
            (reference.abs() < torch.finfo(dtype).tiny).reshape(-1),
        )  # fmt: skip

    def failures(self) -> Tensor:
        """Where ours breaks the criterion of the module's docstring."""
        allowed = self.theirs_error.clamp_min(1.0) + self.subnormal.double()
        beyond = ~(self.ours_error <= allowed)
        non_finite = ~self.ours.isfinite() | ~self.theirs.isfinite()
        unlike_torch = ~self.finite & non_finite & ~same_values(self.ours, self.theirs)
        return beyond | unlike_torch

    def check(self) -> None:
        bad = self.failures()
        if bad.any():
            worst = bad.nonzero()[self.ours_error[bad].argmax()].item()
            raise AssertionError(
                f"{self.what}: {int(bad.sum())} elements beyond the criterion; the worst: "
                f"ours {self.ours[worst].item():.6g} ({self.ours_error[worst].item():.3g} ulp), "
                f"torch's {self.theirs[worst].item():.6g} "
                f"({self.theirs_error[worst].item():.3g} ulp)"
            )

    @staticmethod
    def concat(what: str, parts: list[Errors]) -> Errors:
        fields = ("ours", "theirs", "ours_error", "theirs_error", "finite", "subnormal")
        joined = {name: torch.cat([getattr(p, name) for p in parts]) for name in fields}
        return Errors(what, **joined)


# ----------------------------------------------------------------------------- inputs


@functools.cache
def every_value(dtype: torch.dtype) -> Tensor:
    """Every finite value of the dtype (both zeros, the subnormals), then +inf, −inf, NaN."""
    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    special = torch.tensor([math.inf, -math.inf, math.nan], dtype=dtype)
    return torch.cat([values[values.isfinite()], special])


def spread(dtype: torch.dtype, n: int, limit: float, generator: torch.Generator) -> Tensor:
    """n finite values with |v| ≤ limit, uniform over bit patterns: every binade sampled."""
    values = every_value(dtype)[:-3]
    values = values[values.abs() <= limit]  # a new tensor: the cached one stays as it is
    return values[torch.randint(0, values.numel(), (n,), generator=generator)]


def random_halves(dtype: torch.dtype, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Upstream gradients: standard normal, rounded to the dtype."""
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def run_ours(module: hn.Module, inputs: tuple[Tensor, ...], grad: Any) -> tuple[Tensor, Tensor]:
    """(output, d(output · grad)/d(first input)) by our forward and backward."""
    out = module(*inputs)
    return out, module.backward(grad)


def run_theirs(
    module: torch.nn.Module, inputs: tuple[Tensor, ...], grad: Tensor
) -> tuple[Tensor, Tensor]:
    """(output, d(output · grad)/d(first input)) by the torch module and autograd."""
    leaf = inputs[0].detach().clone().requires_grad_(True)
    out = module(leaf, *inputs[1:])
    (grad_input,) = torch.autograd.grad(out, leaf, grad)
    return out.detach(), grad_input


# ----------------------------------------------------------------------------- activations


@dataclass
class Activation:
    name: str
    ours: Callable[[], hn.Module]
    theirs: Callable[[], torch.nn.Module]
    value: Callable[[Tensor], Tensor]  # float64 reference f(x)
    slope: Callable[[Tensor], Tensor]  # float64 reference f′(x)


_PHI = 1 / math.sqrt(2 * math.pi)


def _gelu(x: Tensor) -> Tensor:
    return x * 0.5 * torch.erfc(-x / math.sqrt(2))


def _gelu_slope(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2)) + x * _PHI * torch.exp(-x * x / 2)


def _gelu_tanh(x: Tensor) -> Tensor:
    # ½x(1 + tanh u) = x σ(2u): no cancellation where tanh u → −1
    return x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))


def _gelu_tanh_slope(x: Tensor) -> Tensor:
    s = 2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x**2)
    return torch.sigmoid(s) + x * (2 * torch.sigmoid(s) * torch.sigmoid(-s)) * du


def _softplus(beta: float, threshold: float) -> tuple[Any, Any]:
    def value(x: Tensor) -> Tensor:
        return torch.where(x * beta > threshold, x, torch.log1p(torch.exp(x * beta)) / beta)

    def slope(x: Tensor) -> Tensor:
        return torch.where(x * beta > threshold, 1.0, torch.sigmoid(x * beta))

    return value, slope


def _leaky(slope: float) -> tuple[Any, Any]:
    return lambda x: torch.where(x > 0, x, slope * x), lambda x: torch.where(x > 0, 1.0, slope)


def _elu(alpha: float) -> tuple[Any, Any]:
    return (
        lambda x: torch.where(x > 0, x, alpha * torch.expm1(x)),
        lambda x: torch.where(x > 0, 1.0, alpha * torch.exp(x)),
    )


def _silu_slope(x: Tensor) -> Tensor:
    below, above = torch.sigmoid(x), torch.sigmoid(-x)
    return below + x * below * above  # σ(x)(1 + x(1 − σ(x))), with 1 − σ(x) kept as σ(−x)


ACTIVATIONS = [
    Activation("ReLU", hn.ReLU, torch.nn.ReLU, torch.relu, lambda x: (x > 0).double()),
    Activation(
        "Sigmoid", hn.Sigmoid, torch.nn.Sigmoid, torch.sigmoid,
        lambda x: torch.sigmoid(x) * torch.sigmoid(-x),
    ),
    Activation("Tanh", hn.Tanh, torch.nn.Tanh, torch.tanh, lambda x: torch.cosh(x) ** -2),
    Activation("LeakyReLU", hn.LeakyReLU, torch.nn.LeakyReLU, *_leaky(0.01)),
    Activation(
        "LeakyReLU(0.3)", lambda: hn.LeakyReLU(0.3), lambda: torch.nn.LeakyReLU(0.3),
        *_leaky(0.3),
    ),
    Activation("ELU", hn.ELU, torch.nn.ELU, *_elu(1.0)),
    Activation("ELU(1.7)", lambda: hn.ELU(alpha=1.7), lambda: torch.nn.ELU(alpha=1.7), *_elu(1.7)),
    Activation("GELU", hn.GELU, torch.nn.GELU, _gelu, _gelu_slope),
    Activation(
        "GELU(tanh)", lambda: hn.GELU("tanh"), lambda: torch.nn.GELU("tanh"),
        _gelu_tanh, _gelu_tanh_slope,
    ),
    Activation("Softplus", hn.Softplus, torch.nn.Softplus, *_softplus(1.0, 20.0)),
    Activation(
        "Softplus(0.5, 6)", lambda: hn.Softplus(beta=0.5, threshold=6.0),
        lambda: torch.nn.Softplus(beta=0.5, threshold=6.0), *_softplus(0.5, 6.0),
    ),
    Activation("SiLU", hn.SiLU, torch.nn.SiLU, torch.nn.functional.silu, _silu_slope),
]  # fmt: skip


def activation_errors(
    case: Activation, dtype: torch.dtype, device: torch.device = CPU
) -> list[Errors]:
    """The forward, and the backward with g = 1 and with random g, on every value of dtype."""
    x = every_value(dtype).to(device)
    x64, finite = x.double(), x.isfinite()
    value, slope = case.value(x64), case.slope(x64)
    generator = torch.Generator().manual_seed(0)
    results = []
    random = random_halves(dtype, x.shape, generator).to(device)
    for name, g in (("1", torch.ones_like(x)), ("random", random)):
        out, grad = run_ours(case.ours(), (x,), g)
        out_t, grad_t = run_theirs(case.theirs(), (x,), g)
        what = f"{case.name} {dtype}"
        if name == "1":
            results.append(Errors.measure(f"{what} forward", out, out_t, value, finite))
        what = f"{what} backward (g = {name})"
        results.append(Errors.measure(what, grad, grad_t, g.double() * slope, finite))
    return results


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case", ACTIVATIONS, ids=lambda c: c.name)
def test_activation_is_as_exact_as_torch(
    case: Activation, dtype: torch.dtype, device: torch.device
) -> None:
    for errors in activation_errors(case, dtype, device):
        errors.check()


# ----------------------------------------------------------------------------- losses


@dataclass
class Loss:
    name: str
    ours: Callable[..., hn.Module]
    theirs: Callable[..., torch.nn.Module]
    inputs: Callable[[torch.dtype, str], tuple[Tensor, Tensor]]  # (prediction, target)
    options: Callable[[torch.dtype], dict[str, Tensor]] = field(default=lambda dtype: {})
    # dℓ_i/dp_i in float64, where torch's float64 autograd cancels (else that is the reference)
    slope: Callable[[Tensor, Tensor, dict[str, Tensor]], Tensor] | None = None


def _with_specials(
    p: Tensor, t: Tensor, reduction: str, targets: bool = True
) -> tuple[Tensor, Tensor]:
    """±inf and NaN predictions (and targets) in row 0, for reduction "none"."""
    if reduction == "none":
        special = torch.tensor([math.inf, -math.inf, math.nan], dtype=p.dtype)
        p[0, :3] = special
        if targets:
            t[0, 3:6] = special
    return p, t


def _pairs(dtype: torch.dtype, reduction: str, kink: float = 1.0) -> tuple[Tensor, Tensor]:
    """(prediction, target) of shape (64, 64) over every binade; rows 8-15 equal, 16-23 one
    ulp apart, 24-31 around ±kink apart."""
    generator = torch.Generator().manual_seed(1)
    limit = 2.0**8 if reduction == "none" else 2.0**4  # 256 squares sum without overflow
    p = spread(dtype, 64 * 64, limit, generator).reshape(64, 64)
    t = spread(dtype, 64 * 64, limit, generator).reshape(64, 64)
    t[8:16] = p[8:16]
    t[16:24] = (p[16:24].view(torch.int16) + 1).view(dtype)  # the next value away from 0
    offset = kink * (1 + torch.linspace(-0.01, 0.01, 64 * 8)).reshape(8, 64)
    t[24:32] = (p[24:32].double() + offset * torch.sign(p[24:32].double() - 0.5)).to(dtype)
    return _with_specials(p, t, reduction)


def _probability_targets(dtype: torch.dtype, reduction: str) -> tuple[Tensor, Tensor]:
    """Logits over every binade up to 2¹², targets in [0, 1], columns 4-15 exactly 0 or 1."""
    generator = torch.Generator().manual_seed(3)
    p = spread(dtype, 64 * 64, 2.0**12, generator).reshape(64, 64)
    p[:, :4] = torch.tensor([0.0, 1.0, 0.5, 1e-3]).to(dtype)
    t = torch.rand(64, 64, generator=generator, dtype=torch.float64)
    t[:, 4:16] = t[:, 4:16].round()
    return _with_specials(p, t.to(dtype), reduction, targets=False)  # t ∈ [0, 1]


def _logits(dtype: torch.dtype) -> Tensor:
    """64 rows of 7 logits at scales 2⁻¹⁶ .. 2¹⁰; a row of equal logits, one of two large."""
    generator = torch.Generator().manual_seed(2)
    scales = 2.0 ** torch.linspace(-16, 10, 64, dtype=torch.float64).unsqueeze(1)
    logits = torch.randn(64, 7, generator=generator, dtype=torch.float64) * scales
    logits[0] = 3.0
    logits[1] = torch.tensor([-30.0, 40.0, 1.0, 0.0, -2.0, 5.0, 39.0])
    return logits.to(dtype)


def _labels(dtype: torch.dtype, reduction: str) -> tuple[Tensor, Tensor]:
    """Class indices; for reduction "none" a −inf logit beside the target, an inf, a NaN."""
    generator = torch.Generator().manual_seed(4)
    logits, labels = _logits(dtype), torch.randint(0, 7, (64,), generator=generator)
    if reduction == "none":
        labels[2:5] = 0
        logits[2, 3], logits[3, 0], logits[4, 5] = -math.inf, math.inf, math.nan
    return logits, labels


def _some_ignored(dtype: torch.dtype, reduction: str) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 7, (64,), generator=generator)
    labels[::5] = 2  # the ignore_index below
    return _logits(dtype), labels


def _distributions(dtype: torch.dtype, reduction: str) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(5)
    target = torch.randn(64, 7, generator=generator, dtype=torch.float64).mul(3).softmax(1)
    return _logits(dtype), target.to(dtype)


def _class_weight(dtype: torch.dtype) -> dict[str, Tensor]:
    return {"weight": torch.tensor([0.5, 2.0, 1.0, 0.3, 1.7, 1.0, 0.9]).to(dtype)}


def _bce_weights(dtype: torch.dtype) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(6)
    return {
        "weight": torch.rand(64, generator=generator).add(0.5).to(dtype),
        "pos_weight": torch.rand(64, generator=generator).mul(3).to(dtype),
    }


def _bce_slope(x: Tensor, t: Tensor, options: dict[str, Tensor]) -> Tensor:
    """w [l σ(x) − p_w t], l = 1 + (p_w − 1) t, with the sigmoid below ½ on either side:
    torch's float64 σ(x) − t is 0 for t = 1, x > 37, where it is −σ(−x) ≠ 0."""
    one = torch.ones((), dtype=x.dtype)
    pos_weight, weight = options.get("pos_weight", one), options.get("weight", one)
    log_weight = 1 + (pos_weight - 1) * t
    below, above = torch.sigmoid(x), torch.sigmoid(-x)
    return weight * torch.where(
        x < 0, log_weight * below - pos_weight * t, (1 - t) - log_weight * above
    )


LOSSES = [
    Loss("MSELoss", hn.MSELoss, torch.nn.MSELoss, _pairs),
    Loss("L1Loss", hn.L1Loss, torch.nn.L1Loss, _pairs),
    Loss("HuberLoss", hn.HuberLoss, torch.nn.HuberLoss, _pairs),
    Loss(
        "HuberLoss(delta=0.3)",
        lambda **kw: hn.HuberLoss(delta=0.3, **kw),
        lambda **kw: torch.nn.HuberLoss(delta=0.3, **kw),
        lambda dtype, reduction: _pairs(dtype, reduction, kink=0.3),
    ),
    Loss(
        "BCEWithLogitsLoss", hn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss,
        _probability_targets, slope=_bce_slope,
    ),
    Loss(
        "BCEWithLogitsLoss(weight, pos_weight)", hn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss,
        _probability_targets, _bce_weights, _bce_slope,
    ),
    Loss("CrossEntropyLoss", hn.CrossEntropyLoss, torch.nn.CrossEntropyLoss, _labels),
    Loss(
        "CrossEntropyLoss(weight, ignore_index, smoothing)",
        lambda **kw: hn.CrossEntropyLoss(ignore_index=2, label_smoothing=0.1, **kw),
        lambda **kw: torch.nn.CrossEntropyLoss(ignore_index=2, label_smoothing=0.1, **kw),
        _some_ignored, _class_weight,
    ),
    Loss(
        "CrossEntropyLoss(probabilities, smoothing)",
        lambda **kw: hn.CrossEntropyLoss(label_smoothing=0.2, **kw),
        lambda **kw: torch.nn.CrossEntropyLoss(label_smoothing=0.2, **kw),
        _distributions,
    ),
]  # fmt: skip
REDUCTIONS = ["none", "mean", "sum"]


def loss_errors(
    case: Loss, dtype: torch.dtype, reduction: str, device: torch.device = CPU
) -> list[Errors]:
    """Forward and backward; "none" on the whole (64, ·) batch with a random upstream
    gradient, "mean"/"sum" as 16 losses of 4 rows each (4 samples for cross-entropy) with
    upstream gradient 1."""
    prediction, target = (t.to(device) for t in case.inputs(dtype, reduction))
    options = {name: value.to(device) for name, value in case.options(dtype).items()}
    options64 = {k: v.double() for k, v in options.items()}
    if reduction == "none":
        batches = [(prediction, target)]
    else:
        batches = [(prediction[i : i + 4], target[i : i + 4]) for i in range(0, 64, 4)]
    generator = torch.Generator().manual_seed(7)
    forwards, backwards = [], []
    for p, t in batches:
        theirs_fn = case.theirs(reduction=reduction, **options)
        out_t = theirs_fn(p, t)
        if reduction == "none":
            g = random_halves(dtype, tuple(out_t.shape), generator).to(device)
            out, grad = run_ours(case.ours(reduction=reduction, **options), (p, t), g)
        else:
            g = torch.ones((), dtype=dtype, device=device)
            out, grad = run_ours(case.ours(reduction=reduction, **options), (p, t), 1.0)
        _, grad_t = run_theirs(theirs_fn, (p, t), g)
        t64 = t.double() if t.is_floating_point() else t
        reference_fn = case.theirs(reduction=reduction, **options64)
        value, slope = run_theirs(reference_fn, (p.double(), t64), g.double())
        if case.slope is not None:
            scale = g.double() / (p.numel() if reduction == "mean" else 1)
            slope = case.slope(p.double(), t64, options64) * scale
        finite = p.isfinite() & (t.isfinite() if t.is_floating_point() else True)
        if out.dim() == 0:
            out_finite = finite.all()
        elif out.shape != p.shape:  # one cross-entropy per sample (row)
            out_finite = finite.all(1)
        else:
            out_finite = finite
        what = f"{case.name}(reduction={reduction!r}) {dtype}"
        forwards.append(Errors.measure(f"{what} forward", out, out_t, value, out_finite))
        backwards.append(Errors.measure(f"{what} backward", grad, grad_t, slope, finite))
    return [
        Errors.concat(forwards[0].what, forwards), Errors.concat(backwards[0].what, backwards)
    ]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case", LOSSES, ids=lambda c: c.name)
def test_loss_is_as_exact_as_torch(
    case: Loss, dtype: torch.dtype, reduction: str, device: torch.device
) -> None:
    for errors in loss_errors(case, dtype, reduction, device):
        errors.check()


# ----------------------------------------------------------------------------- along rows


@dataclass
class RowCase:
    """A module that couples the entries of a row (the last dim): softmax, normalisation."""

    name: str
    ours: Callable[[torch.nn.Module], hn.Module]  # from the torch twin, parameters included
    theirs: Callable[[torch.dtype], torch.nn.Module]  # in the given dtype


def _drawn(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """γ and β drawn (rounded to the half dtype), so that the parameters matter."""
    generator = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator).mul(2).to(dtype))
    return module


def _row_inputs(dtype: torch.dtype) -> list[Tensor]:
    """The logits of the losses above (64 rows of 7 at scales 2⁻¹⁶ .. 2¹⁰, a constant row);
    rows of 7 on an offset 2⁻⁴ .. 2¹² times their spread (the mean cancels in x − μ), a row
    with +inf, one with −inf, one with NaN (apart: the parameter gradients sum over rows);
    8 rows of 256."""
    generator = torch.Generator().manual_seed(10)
    offsets = 2.0 ** torch.linspace(-4, 12, 32, dtype=torch.float64).unsqueeze(1)
    shifted = (1 + torch.randn(32, 7, generator=generator, dtype=torch.float64) / offsets) * 3
    special = torch.randn(3, 7, generator=generator, dtype=torch.float64)
    special[0, 2], special[1, 4], special[2, 6] = math.inf, -math.inf, math.nan
    wide = torch.randn(8, 256, generator=generator, dtype=torch.float64) * 4
    narrow = torch.cat([_logits(dtype).double(), shifted])
    return [narrow.to(dtype), special.to(dtype), wide.to(dtype)]


ROW_CASES = [
    RowCase("Softmax", lambda m: hn.Softmax(dim=-1), lambda dtype: torch.nn.Softmax(dim=-1)),
    RowCase(
        "LogSoftmax", lambda m: hn.LogSoftmax(dim=1), lambda dtype: torch.nn.LogSoftmax(dim=1)
    ),
    RowCase(
        "LayerNorm", hn.from_torch,
        lambda dtype: _drawn(torch.nn.LayerNorm(7, dtype=dtype), dtype),
    ),
    RowCase(
        "LayerNorm(no affine, eps=0.1)", hn.from_torch,
        lambda dtype: torch.nn.LayerNorm(7, eps=0.1, elementwise_affine=False, dtype=dtype),
    ),
    RowCase(
        "RMSNorm", hn.from_torch, lambda dtype: _drawn(torch.nn.RMSNorm(7, dtype=dtype), dtype)
    ),
]  # fmt: skip


def _in_float64(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The float64 twin of a half module, with its half parameters and eps (RMSNorm's
    default ε is the input dtype's machine epsilon)."""
    reference = copy.deepcopy(module).double()
    if isinstance(reference, torch.nn.RMSNorm) and reference.eps is None:
        reference.eps = torch.finfo(dtype).eps
    return reference


def module_errors(
    what: str, ours: hn.Module, theirs: torch.nn.Module, reference: torch.nn.Module, x: Tensor,
    g: Tensor, finite: Tensor, params_finite: Tensor,
) -> list[Errors]:  # fmt: skip
    """Forward, input gradient and each parameter's gradient of ``ours`` and of torch's module
    in the half dtype, each measured against ``reference`` (the module in float64), for the
    upstream gradient ``g``; ``finite`` marks the entries counted (``params_finite`` for the
    parameters' gradients)."""
    out, grad = run_ours(ours, (x,), g)
    leaf = x.detach().clone().requires_grad_(True)
    out_t = theirs(leaf)
    grads_t = torch.autograd.grad(out_t, [leaf, *theirs.parameters()], g)
    leaf64 = x.double().requires_grad_(True)
    out64 = reference(leaf64)
    grads64 = torch.autograd.grad(out64, [leaf64, *reference.parameters()], g.double())
    results = [
        Errors.measure(f"{what} forward", out, out_t.detach(), out64, finite),
        Errors.measure(f"{what} backward", grad, grads_t[0], grads64[0], finite),
    ]
    params = dict(ours.named_parameters())
    names = [name for name, _ in theirs.named_parameters()]
    for name, got, exact in zip(names, grads_t[1:], grads64[1:], strict=True):
        grad_param = params[name].grad
        assert grad_param is not None
        results.append(
            Errors.measure(f"{what} backward (d{name})", grad_param, got, exact, params_finite)
        )
    return results


def row_errors(case: RowCase, dtype: torch.dtype, device: torch.device = CPU) -> list[Errors]:
    """Forward, input gradient and parameter gradients (random upstream gradient), each
    row's entries counted as finite only where the whole row is."""
    generator = torch.Generator().manual_seed(11)
    results = []
    for x in _row_inputs(dtype):
        x = x.to(device)
        theirs = case.theirs(dtype).to(device)
        if x.shape[-1] != 7 and not isinstance(theirs, (torch.nn.Softmax, torch.nn.LogSoftmax)):
            continue  # the normalisations take rows of 7
        ours = case.ours(theirs)
        reference = _in_float64(theirs, dtype)
        g = random_halves(dtype, tuple(x.shape), generator).to(device)
        finite = x.isfinite().all(-1, keepdim=True).expand(x.shape)
        what = f"{case.name} {dtype} {tuple(x.shape)}"
        # a parameter's gradient sums over every row: finite only where all rows are
        results += module_errors(what, ours, theirs, reference, x, g, finite, finite.all())
    return results


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.name)
def test_softmax_and_normalisation_are_as_exact_as_torch(
    case: RowCase, dtype: torch.dtype, device: torch.device
) -> None:
    for errors in row_errors(case, dtype, device):
        errors.check()


# ----------------------------------------------------------------------------- over channels


@dataclass
class ChannelCase:
    """A normalisation over channels (axis 1): GroupNorm, BatchNorm in training and eval."""

    name: str
    theirs: Callable[[torch.dtype], torch.nn.Module]  # in the given dtype
    shape: tuple[int, ...] = (8, 4, 3, 3)


def _with_running_statistics(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """γ, β and the running statistics drawn; eval mode (the running statistics normalise)."""
    generator = torch.Generator().manual_seed(12)
    with torch.no_grad():
        module.running_mean.copy_(torch.randn(4, generator=generator).mul(5).to(dtype))
        module.running_var.copy_(torch.rand(4, generator=generator).add(0.05).mul(9).to(dtype))
    return _drawn(module, dtype).eval()


CHANNEL_CASES = [
    ChannelCase("GroupNorm(2, 4)", lambda dtype: _drawn(torch.nn.GroupNorm(2, 4), dtype).to(dtype)),
    ChannelCase("BatchNorm2d", lambda dtype: _drawn(torch.nn.BatchNorm2d(4, dtype=dtype), dtype)),
    ChannelCase(
        "BatchNorm2d(eval)",
        lambda dtype: _with_running_statistics(torch.nn.BatchNorm2d(4, dtype=dtype), dtype),
    ),
    ChannelCase(
        "BatchNorm1d(no affine)",
        lambda dtype: torch.nn.BatchNorm1d(4, affine=False, dtype=dtype), shape=(16, 4),
    ),
]  # fmt: skip


def _channel_input(dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """Channel c on an offset 3·4^c (the mean cancels in x − μ), sample i scaled by 2^(i−4)."""
    generator = torch.Generator().manual_seed(13)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    scale = 2.0 ** torch.arange(-4.0, shape[0] - 4.0, dtype=torch.float64)
    offset = 3.0 * 4.0 ** torch.arange(4.0, dtype=torch.float64)
    view = (-1, *[1] * (len(shape) - 1))
    return (x * scale.view(view) + offset.view(1, -1, *[1] * (len(shape) - 2))).to(dtype)


def channel_errors(
    case: ChannelCase, dtype: torch.dtype, device: torch.device = CPU
) -> list[Errors]:
    """Forward, input and parameter gradients (random upstream gradient), and the running
    statistics after the step (BatchNorm in training)."""
    theirs = case.theirs(dtype).to(device)
    ours = hn.from_torch(copy.deepcopy(theirs)).train(theirs.training)
    reference = _in_float64(theirs, dtype)
    x = _channel_input(dtype, case.shape).to(device)
    g = random_halves(dtype, tuple(x.shape), torch.Generator().manual_seed(14)).to(device)
    finite = torch.ones_like(x, dtype=torch.bool)
    what = f"{case.name} {dtype}"
    all_finite = torch.tensor(True, device=device)
    results = module_errors(what, ours, theirs, reference, x, g, finite, all_finite)
    buffers = dict(ours.named_buffers())
    for name, theirs_buffer in theirs.named_buffers():
        if theirs_buffer.is_floating_point():  # num_batches_tracked aside
            exact = dict(reference.named_buffers())[name]
            results.append(
                Errors.measure(f"{what} forward ({name})", buffers[name], theirs_buffer, exact,
                               all_finite)
            )  # fmt: skip
    return results


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case", CHANNEL_CASES, ids=lambda c: c.name)
def test_group_and_batch_norm_are_as_exact_as_torch(
    case: ChannelCase, dtype: torch.dtype, device: torch.device
) -> None:
    for errors in channel_errors(case, dtype, device):
        errors.check()


@pytest.mark.parametrize("make", [
    lambda: torch.nn.GroupNorm(2, 4),
    lambda: torch.nn.BatchNorm2d(4).eval(),
], ids=["GroupNorm", "BatchNorm2d(eval)"])  # fmt: skip
def test_per_sample_gradients_of_a_half_normalisation_are_float32_rounded_once(
    make: Callable[[], torch.nn.Module],
) -> None:
    """The per-sample dγ_i, dβ_i read the float32 ctx: computed in float32, rounded once."""
    x = _channel_input(torch.float32, (3, 4, 2, 2)).to(torch.bfloat16)
    g = random_halves(torch.bfloat16, tuple(x.shape), torch.Generator().manual_seed(15))
    source = _drawn(make(), torch.bfloat16)
    half = hn.from_torch(copy.deepcopy(source).to(torch.bfloat16)).train(source.training)
    single = hn.from_torch(copy.deepcopy(source).float()).train(source.training)
    half(x)
    with per_sample_gradients():  # what backward(..., per_sample=True) of a container does
        half.backward(g)
    single(x.float())
    with per_sample_gradients():
        single.backward(g.float())
    for (name, got), expected in zip(half.named_parameters(), single.parameters(), strict=True):
        assert got.grad_sample.dtype == torch.bfloat16, name
        assert torch.equal(got.grad_sample, expected.grad_sample.to(torch.bfloat16)), name


# ----------------------------------------------------------------------------- the points


def test_gelu_backward_where_its_slope_crosses_zero_has_the_right_sign() -> None:
    """bfloat16 x = −0.754 (−0.75390625): GELU′(x) = −0.00091; it was +0.00098."""
    x = torch.tensor([-0.754], dtype=torch.bfloat16)
    gelu = hn.GELU()
    gelu(x)
    grad = gelu.backward(torch.ones_like(x))
    expected = _gelu_slope(x.double())
    assert expected.item() == pytest.approx(-0.000911, rel=1e-3)
    assert grad.item() < 0
    assert ulp_error(grad, expected, torch.bfloat16).item() <= 0.5


@pytest.mark.parametrize("dtype", HALF)
def test_gelu_of_minus_3_156_is_not_zero(dtype: torch.dtype) -> None:
    """GELU(−3.156) = −0.0025 (it was −0 in bfloat16)."""
    x = torch.tensor([-3.156], dtype=dtype)
    expected = _gelu(x.double())
    assert expected.item() == pytest.approx(-0.00252, rel=1e-2)
    assert ulp_error(hn.GELU()(x), expected, dtype).item() <= 0.5


def test_layer_norm_recomputes_its_half_output_bit_for_bit() -> None:
    """LayerNorm rebuilds y from the x̂ it keeps (for the next layer's backward): in a half
    dtype from the float32 x̂, rounded once, as forward gave it."""
    layer = hn.from_torch(_drawn(torch.nn.LayerNorm(7, dtype=torch.bfloat16), torch.bfloat16))
    x = _row_inputs(torch.bfloat16)[0]
    out = layer(x)
    again = layer.recompute_output()
    assert again.dtype == torch.bfloat16
    assert torch.equal(again, out)


# ----------------------------------------------------------------------------- the helper

# Every kernel pair that computes halves in float32: (forward, backward, forward's arguments).
_KERNELS: list[tuple[str, Any, Any, Callable[[Tensor], tuple[Any, ...]]]] = [
    ("sigmoid", F.sigmoid_forward, F.sigmoid_backward, lambda x: (x,)),
    ("tanh", F.tanh_forward, F.tanh_backward, lambda x: (x,)),
    ("elu", F.elu_forward, F.elu_backward, lambda x: (x, 1.7)),
    ("gelu", F.gelu_forward, F.gelu_backward, lambda x: (x, "none")),
    ("gelu tanh", F.gelu_forward, F.gelu_backward, lambda x: (x, "tanh")),
    ("softplus", F.softplus_forward, F.softplus_backward, lambda x: (x, 0.5, 6.0)),
    ("mse", F.mse_forward, F.mse_backward, lambda x: (x, x.flip(0), "mean")),
    ("l1", F.l1_forward, F.l1_backward, lambda x: (x, x.flip(0), "sum")),
    ("huber", F.huber_forward, F.huber_backward, lambda x: (x, x.flip(0), 0.3, "mean")),
    (
        "bce", F.bce_with_logits_forward, F.bce_with_logits_backward,
        lambda x: (x, x.flip(0).sigmoid(), x.flip(1).abs(), x[0].abs(), "mean"),
    ),
    (
        "cross-entropy", F.cross_entropy_forward, F.cross_entropy_backward,
        lambda x: (x, torch.arange(x.shape[0]) % x.shape[1], x[0].abs(), 1, 0.1, "mean"),
    ),
    (
        "cross-entropy labels", F.cross_entropy_of_labels_forward, F.cross_entropy_backward,
        lambda x: (x, torch.arange(x.shape[0]) % x.shape[1], "sum"),
    ),
    ("silu", F.silu_forward, F.silu_backward, lambda x: (x,)),
    ("softmax", F.softmax_forward, F.softmax_backward, lambda x: (x, 1)),
    ("log-softmax", F.log_softmax_forward, F.log_softmax_backward, lambda x: (x, 0)),
    (
        "layer norm", F.layer_norm_forward, F.layer_norm_backward,
        lambda x: (x, 1, x[0].abs(), x[1], 1e-5),
    ),
    ("layer norm, no affine", F.layer_norm_forward, F.layer_norm_backward,
        lambda x: (x, 2, None, None, 0.1)),
    ("rms norm", F.rms_norm_forward, F.rms_norm_backward, lambda x: (x, 1, x[0].abs(), 1e-3)),
    (
        "group norm", F.group_norm_forward, F.group_norm_backward,
        lambda x: (x, 5, x[0].abs(), x[1], 1e-5),
    ),
    (
        "batch norm", F.batch_norm_forward, F.batch_norm_backward,
        lambda x: (x, x[2].clone(), x[3].abs(), x[0].abs(), x[1], True, 0.1, 1e-5),
    ),
    (
        "batch norm eval", F.batch_norm_forward, F.batch_norm_backward,
        lambda x: (x, x[2].clone(), x[3].abs(), x[0].abs(), None, False, 0.1, 1e-5),
    ),
]  # fmt: skip


def _float32(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("kernel", _KERNELS, ids=lambda k: k[0])
def test_a_half_kernel_is_the_float32_kernel_rounded_once(
    kernel: tuple[str, Any, Any, Callable[[Tensor], tuple[Any, ...]]], dtype: torch.dtype
) -> None:
    _, forward, backward, arguments = kernel
    generator = torch.Generator().manual_seed(8)
    x = (torch.randn(16, 5, generator=generator) * 4).to(dtype)
    out, ctx = forward(*arguments(x))
    out32, ctx32 = forward(*_float32(arguments(x)))
    assert type(ctx) is _common.Float32Ctx
    assert ctx.dtype == dtype
    assert out.dtype == dtype
    assert torch.equal(out, out32.to(dtype))
    for grad in (torch.randn(out.shape, generator=generator).to(dtype), 0.37):
        if not isinstance(grad, Tensor) and out.dim() > 0:
            continue  # a number is the upstream gradient of a reduced loss only
        got, expected = backward(grad, ctx), backward(_float32((grad,))[0], ctx32)
        if isinstance(got, Tensor):  # else the gradients of a normalisation: (dx, dγ, ...)
            got, expected = (got,), (expected,)
        assert len(got) == len(expected)
        for mine, theirs in zip(got, expected, strict=True):
            if theirs is None:  # no γ, β
                assert mine is None
                continue
            assert mine.dtype == dtype
            assert torch.equal(mine, theirs.to(dtype))


@pytest.mark.parametrize("dtype", HALF)
def test_batch_norm_rounds_its_half_running_statistics_once(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(16)
    x = (torch.randn(16, 5, generator=generator) * 3 + 40).to(dtype)
    mean, var = torch.randn(5, generator=generator).to(dtype), torch.rand(5).add(1).to(dtype)
    mean32, var32 = mean.float(), var.float()
    F.batch_norm_forward(x, mean, var, None, None, True, 0.3, 1e-5)
    F.batch_norm_forward(x.float(), mean32, var32, None, None, True, 0.3, 1e-5)
    assert mean.dtype == var.dtype == dtype
    assert torch.equal(mean, mean32.to(dtype))
    assert torch.equal(var, var32.to(dtype))
    assert not torch.equal(mean.float(), mean32)  # rounded: the float32 update has more digits


def test_the_helper_leaves_float32_and_float64_to_the_kernel() -> None:
    calls: list[torch.dtype] = []

    def forward(x: Tensor, scale: float) -> tuple[Tensor, tuple[Tensor]]:
        calls.append(x.dtype)
        return x * scale, (x,)

    def backward(grad: Tensor, ctx: tuple[Tensor]) -> Tensor:
        calls.append(grad.dtype)
        return grad * ctx[0]

    wrapped = _common.half_in_float32(forward)
    wrapped_backward = _common.half_in_float32_backward(backward)
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([1.5, -2.0], dtype=dtype)
        out, ctx = wrapped(x, 3.0)
        assert type(ctx) is tuple
        assert ctx[0] is x  # the kernel's own ctx, untouched
        assert wrapped_backward(out, ctx).dtype == dtype
    x = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    out, ctx = wrapped(x, 1 / 3)
    assert out.dtype == torch.bfloat16
    assert ctx.ctx[0].dtype == torch.float32
    assert wrapped_backward(out, ctx).dtype == torch.bfloat16
    assert calls == [
        torch.float32, torch.float32,  # float32: forward and backward as they are
        torch.float64, torch.float64,  # float64 likewise
        torch.float32, torch.float32,  # bfloat16: both in float32
    ]  # fmt: skip
    assert wrapped.__name__ == "forward"  # functools.wraps: the docs see the kernel's name


def test_the_helper_rounds_every_gradient_of_a_tuple_and_passes_extra_arguments() -> None:
    def forward(x: Tensor, weight: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return x * weight, (x, weight)

    def backward(
        grad: Tensor, ctx: tuple[Tensor, Tensor], input_grad: bool = True
    ) -> tuple[Tensor | None, Tensor]:
        x, weight = ctx
        assert grad.dtype == x.dtype == weight.dtype == torch.float32
        return (grad * weight if input_grad else None), (grad * x).sum(0)

    wrapped = _common.half_in_float32(forward)
    wrapped_backward = _common.half_in_float32_backward(backward)
    x = torch.tensor([[1.5, -2.0], [0.1, 3.0]], dtype=torch.float16)
    weight = torch.tensor([1 / 3, 0.7], dtype=torch.float16)
    out, ctx = wrapped(x, weight)
    assert torch.equal(out, (x.float() * weight.float()).half())
    grad = torch.tensor([[0.3, 1.0], [-1.1, 2.0]], dtype=torch.float16)
    dx, dw = wrapped_backward(grad, ctx)
    assert dx.dtype == dw.dtype == torch.float16
    assert torch.equal(dw, (grad.float() * x.float()).sum(0).half())
    none, dw = wrapped_backward(grad, ctx, input_grad=False)
    assert none is None
    assert dw.dtype == torch.float16


# ----------------------------------------------------------------------------- the table


def _worst(errors: Tensor, finite: Tensor) -> float:
    return errors[finite].max().item() if finite.any() else 0.0


def table() -> str:
    """The largest ulp error, ours and torch's, per case and dtype (finite inputs)."""
    header = f"{'case':<58} {'dtype':<9} {'fwd ours':>9} {'torch':>8} {'bwd ours':>9} {'torch':>8}"
    lines = [header]
    for dtype in HALF_DTYPES:
        rows = [(c.name, activation_errors(c, dtype)) for c in ACTIVATIONS]
        rows += [(c.name, row_errors(c, dtype)) for c in ROW_CASES]
        rows += [(c.name, channel_errors(c, dtype)) for c in CHANNEL_CASES]
        for loss in LOSSES:
            for reduction in REDUCTIONS:
                rows.append((f"{loss.name} {reduction}", loss_errors(loss, dtype, reduction)))
        for name, errors in rows:
            worst = {}
            for part in ("forward", "backward"):
                mine = [e for e in errors if f" {part}" in e.what]
                worst[part] = (
                    max(_worst(e.ours_error, e.finite) for e in mine),
                    max(_worst(e.theirs_error, e.finite) for e in mine),
                )
            (f, ft), (b, bt) = worst["forward"], worst["backward"]
            lines.append(
                f"{name:<58} {str(dtype)[6:]:<9} {f:>9.3g} {ft:>8.3g} {b:>9.3g} {bt:>8.3g}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
