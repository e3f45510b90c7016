"""Muon: momentum whose update is orthogonalised by a Newton–Schulz iteration (2-D only)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from handgrad.optim._base import Lists, Optimizer
from handgrad.optim._common import squeeze_scalar

# The quintic's coefficients (Keller Jordan's Muon), chosen for a steep slope at zero.
DEFAULT_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
DEFAULT_NS_STEPS = 5
EPS = 1e-7


class Muon(Optimizer):
    r"""Muon (Jordan et al., 2024) as torch.optim.Muon; parameters must be matrices.

    With learning rate γ, momentum μ, weight decay λ and a parameter of shape A × B::

        M  ← M + (1 − μ) (g − M)                 ``momentum_buffer``
        U  = g + μ (M − g)   if nesterov, else M
        O  = NS(U)                              ≈ the orthogonal factor of U (see newton_schulz)
        θ  ← θ (1 − γλ)
        θ  ← θ − γ s O,   s = √max(1, A/B)       (adjust_lr_fn None or "original")
                          s = 0.2 √max(A, B)     ("match_rms_adamw")

    The Newton–Schulz iteration runs in bfloat16, as torch's does, with the same operations,
    so both produce the same bits. Same-shape matrices are batched; each batched shape keeps
    a :class:`BatchWorkspace` between steps (4 bfloat16 numbers per element of a batch of at
    most 2²² elements, and one matrix), which is not part of the state dict. Complex
    parameters and sparse gradients are refused at step (RuntimeError); parameters that are
    not 2-D at construction (ValueError).
    """

    state_keys = ("momentum_buffer",)
    sparse_error = "Muon does not support sparse gradients"

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = DEFAULT_NS_COEFFICIENTS,
        eps: float = EPS,
        ns_steps: int = DEFAULT_NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)
        self._workspaces: dict[tuple[torch.Size, torch.dtype, torch.device], BatchWorkspace] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter with "
                        f"size: {p.size()}"
                    )

    def check(self, group: dict[str, Any], params: list[Tensor]) -> None:
        if any(p.is_complex() for p in params):
            raise RuntimeError("Muon does not support complex parameters")

    def update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], state: Lists
    ) -> None:
        """One Muon step for matrices of one device and dtype.

        Matrices of one shape go through the Newton–Schulz iteration together, as one batch
        of matrix products (see :func:`batchable`); the others one at a time. The batch is a
        fast path (:func:`muon_update_batch`, the same bits as :func:`muon_update`;
        tests/optim/test_muon_batch.py): bench_optim "200 params of 1,000" (25 × 40), one
        thread, paired against one matrix at a time: 0.70 of its time (0.77 of torch, one at
        a time 0.96); "10 params of 100x100": 1.03, neither faster (issue 12).
        """
        buffers = state["momentum_buffer"]
        settings = MuonSettings.of(group)
        for indices in _same_shape_batches(params):
            if len(indices) == 1:
                i = indices[0]
                muon_update(params[i], grads[i], buffers[i], settings)
            else:
                batch = [params[i] for i in indices]
                muon_update_batch(
                    batch,
                    [grads[i] for i in indices],
                    [buffers[i] for i in indices],
                    settings,
                    workspace=self._workspace(len(batch), batch[0]),
                )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._workspaces = {}  # not part of the state: made again at the next step

    def _workspace(self, count: int, param: Tensor) -> BatchWorkspace:
        """The kept workspace for ``count`` matrices like ``param``, grown as needed."""
        key = (param.shape, param.dtype, param.device)
        workspace = self._workspaces.get(key)
        if workspace is None or workspace.count < count:
            workspace = BatchWorkspace(count, param)
            self._workspaces[key] = workspace
        return workspace


class MuonSettings(NamedTuple):
    """A group's hyperparameters, as the update functions read them."""

    lr: float | Tensor
    weight_decay: float
    momentum: float
    nesterov: bool
    ns_coefficients: tuple[float, float, float]
    ns_steps: int
    eps: float
    adjust_lr_fn: str | None

    @classmethod
    def of(cls, group: dict[str, Any]) -> MuonSettings:
        """The settings of ``group`` (a 1-element tensor lr as 0-d)."""
        return cls(squeeze_scalar(group["lr"]), *(group[name] for name in cls._fields[1:]))


def muon_update(param: Tensor, grad: Tensor, buf: Tensor, settings: MuonSettings) -> None:
    """One Muon step for one matrix (see :class:`Muon` for the rule)."""
    lr, weight_decay, momentum, nesterov, coefficients, ns_steps, eps, adjust = settings
    if grad.ndim != 2:
        raise ValueError("Param gradient must be a 2D matrix")
    buf.lerp_(grad, 1 - momentum)
    direction = grad.lerp(buf, momentum) if nesterov else buf
    ortho = newton_schulz(direction, coefficients, ns_steps, eps)
    param.mul_(1 - lr * weight_decay)
    param.add_(ortho, alpha=-adjusted_lr(lr, adjust, param.shape))


def muon_update_batch(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    settings: MuonSettings,
    workspace: BatchWorkspace | None = None,
) -> None:
    """:func:`muon_update` for matrices of one :func:`batchable` shape, bit for bit.

    The Newton–Schulz products run as one batched product each (:func:`newton_schulz_batch`):
    3 calls per iteration for the whole batch instead of 3 per matrix. Every intermediate
    lives in ``workspace`` (one that :class:`Muon` keeps from step to step; a fresh one if
    not given), so a step allocates nothing of a matrix's size.
    """
    lr, weight_decay, momentum, nesterov, ns_coefficients, ns_steps, eps, adjust = settings
    _check_iteration(ns_coefficients, ns_steps)
    if workspace is None:
        workspace = BatchWorkspace(len(params), params[0])
    stacked, scratch = workspace.buffers(len(params))
    single = workspace.single  # one matrix in the parameters' dtype
    torch._foreach_lerp_(bufs, grads, 1 - momentum)
    for grad, buf, matrix in zip(grads, bufs, stacked, strict=True):
        # torch's direction in the parameters' dtype, then rounded as Tensor.bfloat16() does
        matrix.copy_(torch.lerp(grad, buf, momentum, out=single) if nesterov else buf)
    ortho = newton_schulz_batch(stacked, ns_coefficients, ns_steps, eps, scratch)
    torch._foreach_mul_(params, 1 - lr * weight_decay)
    step = adjusted_lr(lr, adjust, params[0].shape)
    for param, update in zip(params, ortho, strict=True):
        # param.add_(bfloat16) would widen the update into a fresh temporary; this is the
        # same widening (exact), into kept memory
        param.add_(single.copy_(update), alpha=-step)


def _check_iteration(coefficients: tuple[float, float, float], steps: int) -> None:
    """torch's refusals of a Newton–Schulz iteration's settings (ValueError)."""
    if steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")


def newton_schulz(
    matrix: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> Tensor:
    """An approximate orthogonal factor of ``matrix`` (its "zeroth power"), in bfloat16.

    X₀ = G/max(‖G‖_F, ε) (transposed to be wide), then ``steps`` times, with A = X Xᵀ,
    X ← a X + (b A + c A²) X. The coefficients push every singular value towards [0.7, 1.2]
    fast rather than exactly to 1, which is all Muon needs. Each product is one bfloat16
    matrix product or ``addmm`` (accumulated in float32, rounded once) on the same layouts
    as torch's (a transposed view stays a view: a contiguous copy measured slower), so the
    result has torch's bits.
    """
    _check_iteration(coefficients, steps)
    if len(matrix.shape) != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    a, b, c = coefficients
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.bfloat16()  # no copy for a bfloat16 matrix: the division below is in place
    if tall:
        x = x.T  # work with the smaller Gram matrix
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, polynomial, x, beta=a)
    return x.T if tall else x


# oneDNN takes a bfloat16 product of m·k·n > 16³ multiplications, both as a matrix product
# and inside a batched one; smaller ones take other kernels whose last bits differ between
# the two (measured). Batches are cut at this many elements to bound their kept workspace
# (8 bytes an element, see BatchWorkspace).
_ONEDNN_MIN_PRODUCT = 16**3
_BATCH_ELEMENTS = 1 << 22


def batchable(shape: torch.Size | tuple[int, ...]) -> bool:
    """Whether matrices of ``shape`` can share batched products with :func:`newton_schulz`'s bits.

    Every product of the iteration multiplies m × n by n × m or m × m by m × n (m ≤ n), so
    all of them reach the oneDNN kernel exactly when m³ does.
    """
    return min(shape) ** 3 > _ONEDNN_MIN_PRODUCT


def newton_schulz_batch(
    matrices: Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    scratch: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """:func:`newton_schulz` of each matrix of a (batch, rows, cols) bfloat16 stack.

    Each matrix is scaled by its own norm (one reduction per matrix, as torch's); the
    products are ``bmm``/``baddbmm`` over the whole batch, written into ``scratch``: a spare
    of ``matrices``' size for the iterates, and two (batch, m, m) buffers, m = min(rows, cols),
    for X Xᵀ and the polynomial (allocated here if not given). The iterates alternate between
    the spare and ``matrices``' own memory, which is overwritten; the result is a view of one
    of the two. Every iterate after the first is contiguous and wide, as torch's are.
    """
    _check_iteration(coefficients, steps)
    a, b, c = coefficients
    count, rows, cols = matrices.shape
    tall = rows > cols
    wide_shape = (count, min(rows, cols), max(rows, cols))
    if scratch is None:
        scratch = (
            torch.empty_like(matrices, memory_format=torch.contiguous_format),
            matrices.new_empty(count, wide_shape[1], wide_shape[1]),
            matrices.new_empty(count, wide_shape[1], wide_shape[1]),
        )
    spare, gram, polynomial = scratch
    # reshape: matrices' own memory where it is contiguous (as a stack from the workspace is)
    iterates = (spare.view(wide_shape), matrices.reshape(wide_shape))
    x = matrices.transpose(1, 2) if tall else matrices
    for each in x:
        each.div_(each.norm().clamp(min=eps))
    for step in range(steps):
        torch.bmm(x, x.transpose(1, 2), out=gram)
        torch.baddbmm(gram, gram, gram, beta=b, alpha=c, out=polynomial)
        following = iterates[step % 2]
        torch.baddbmm(x, polynomial, x, beta=a, out=following)
        x = following
    return x.transpose(1, 2) if tall else x


class BatchWorkspace:
    """The memory :func:`muon_update_batch` works in, for up to ``count`` matrices like ``param``.

    :class:`Muon` keeps one per batched shape and reuses it every step. A fresh buffer the
    size of a batch is fresh memory, which the operating system maps and zeroes page by page
    on first touch: at 4 × 1000² that cost ~18,000 page faults and ~5 % of a step (measured),
    where torch's one-matrix temporaries are small enough for malloc to recycle. Holds 4
    bfloat16 numbers per element of the batch (the stacked directions, the spare iterate,
    the Gram matrices and the polynomials) and one matrix in the parameter's dtype.
    """

    def __init__(self, count: int, param: Tensor) -> None:
        rows, cols = param.shape
        small = min(rows, cols)
        self.count = count
        self.stacked = torch.empty(count, rows, cols, dtype=torch.bfloat16, device=param.device)
        self.spare = torch.empty_like(self.stacked)
        self.gram = self.stacked.new_empty(count, small, small)
        self.polynomial = torch.empty_like(self.gram)
        self.single = torch.empty_like(param, memory_format=torch.contiguous_format)

    def buffers(self, count: int) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """The stack for ``count`` matrices and its :func:`newton_schulz_batch` scratch."""
        if not 0 < count <= self.count:
            raise ValueError(f"count must be in [1, {self.count}] but is: {count}")
        return self.stacked[:count], (
            self.spare[:count],
            self.gram[:count],
            self.polynomial[:count],
        )


def _same_shape_batches(params: list[Tensor]) -> list[list[int]]:
    """Indices of the parameters to update together, in order of first appearance.

    CPU parameters of one :func:`batchable` shape and dtype (with a gradient of that shape)
    share batches of at most ``_BATCH_ELEMENTS`` elements. bfloat16 parameters do not
    (torch's iteration then overwrites the direction in place, which a batch copy would
    not), nor does the second listing of a parameter (torch updates it twice in a row).
    Everything else is a batch of one.
    """
    if not any(batchable(p.shape) for p in params):  # the common small case: no work
        return [[index] for index in range(len(params))]
    groups: dict[Any, list[int]] = {}
    seen: set[int] = set()
    for index, p in enumerate(params):
        grad = p.grad
        key: Any = index
        if (
            id(p) not in seen
            and p.dtype != torch.bfloat16
            and p.device.type == "cpu"
            and grad is not None
            and grad.shape == p.shape
            and batchable(p.shape)
        ):
            key = (p.shape, p.dtype, grad.dtype)
        seen.add(id(p))
        groups.setdefault(key, []).append(index)
    batches: list[list[int]] = []
    for indices in groups.values():
        size = max(1, _BATCH_ELEMENTS // params[indices[0]].numel())
        batches.extend(indices[start : start + size] for start in range(0, len(indices), size))
    return sorted(batches)


def adjusted_lr(lr: Any, adjust_lr_fn: str | None, shape: torch.Size) -> Any:
    """γ·s for an A × B matrix: s = √max(1, A/B) ("original", the default) or 0.2 √max(A, B).

    "match_rms_adamw" makes the update's RMS match a typical AdamW update's.
    """
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio
