"""Losses: ``loss_fn(prediction, target)`` returns the loss, ``loss_fn.backward(grad=1.0)``
returns d(loss)/d(prediction). Arguments, defaults and reductions follow torch.nn.

``grad`` is the gradient of whatever comes after the loss (1.0 when the loss is the
objective); with ``reduction="none"`` it may be a tensor of the loss's shape.
"""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn import functional as F
from handgrad.nn.functional import Ctx
from handgrad.nn.module import Module

CLASS_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
"""The dtypes cross-entropy takes class-index targets in."""


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        F.check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def _kernel_backward(self, grad: Tensor | float, ctx: Ctx) -> Tensor:
        raise NotImplementedError

    def backward(self, grad: Tensor | float | None = 1.0, input_grad: bool = True) -> Tensor:
        """d(loss)/d(input), scaled by ``grad`` = d(objective)/d(loss).

        ``grad`` is a number (None means 1.0, as torch's ``loss.backward()``), or a tensor of
        the loss's shape (useful with reduction="none"). ``input_grad`` exists only to match
        :meth:`Module.backward`: the gradient with respect to the input (the prediction) is
        what a loss's backward is for, so it is always returned; the target gets none.
        """
        if grad is None:
            grad = 1.0
        elif (
            type(grad) is not float
            and isinstance(grad, int | float)
            and not isinstance(grad, bool)  # True stays a TypeError
        ):
            grad = float(grad)
        # A number fits any loss: only the ctx is taken (the per-sample loop's case, without
        # _recall's checks for a tensor).
        ctx = self._take() if type(grad) is float else self._recall(grad)
        return self._kernel_backward(grad, ctx)

    def _recall(self, grad: Tensor | float) -> Ctx:
        """:meth:`Module._recall`, which also takes a float (the upstream gradient of a loss)."""
        if self._saved is None or isinstance(grad, Tensor):
            return super()._recall(grad)  # type: ignore[arg-type]  # (or its ValueError)
        if type(grad) is not float:
            raise TypeError(
                f"{self._get_name()}.backward(): grad must be a number (d(objective)/d(loss); "
                "None means 1.0) or a tensor of the loss's shape, got "
                f"{type(grad).__name__}"
            )
        return self._take()  # a number fits any loss

    def _check_prediction(self, prediction: object) -> Tensor:
        prediction = self._check_tensor(prediction, "prediction")
        if not prediction.is_floating_point():
            raise ValueError(
                f"{self._get_name()}: prediction must be a floating-point tensor, "
                f"got dtype {prediction.dtype}"
            )
        if self.reduction == "mean" and prediction.numel() == 0:
            raise ValueError(
                f"{self._get_name()}: reduction='mean' of an empty prediction "
                f"(shape {tuple(prediction.shape)}) is 0/0"
            )
        return prediction

    def _check_same_shape(self, prediction: object, target: object) -> tuple[Tensor, Tensor]:
        # Every condition at once, cheaply; only a failure goes through the checks one by
        # one, which raise the error naming the problem.
        if (
            isinstance(prediction, Tensor)
            and isinstance(target, Tensor)
            and target.shape == prediction.shape
            and target.dtype is prediction.dtype
            and prediction.is_floating_point()
            and target.device == prediction.device
            and (self.reduction != "mean" or prediction.numel() > 0)
        ):
            return prediction, target
        prediction = self._check_prediction(prediction)
        target = self._check_tensor(target, "target")
        if target.shape != prediction.shape:
            raise ValueError(
                f"{self._get_name()}: expected target of shape {tuple(prediction.shape)} "
                f"(the prediction's), got {tuple(target.shape)}"
            )
        self._check_like(target, prediction, "target", "prediction")
        return prediction, target


class MSELoss(_Loss):
    """ℓ_i = (p_i − t_i)²; dℓ/dp_i = 2(p_i − t_i) (÷ n for mean)."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        prediction, target = self._check_same_shape(input, target)
        loss, ctx = F.mse_forward(prediction, target, self.reduction)
        return self._remember(ctx, loss)

    def _kernel_backward(self, grad: Tensor | float, ctx: Ctx) -> Tensor:
        return F.mse_backward(grad, ctx)


class L1Loss(_Loss):
    """ℓ_i = |p_i − t_i|; dℓ/dp_i = sign(p_i − t_i) (÷ n for mean)."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        prediction, target = self._check_same_shape(input, target)
        loss, ctx = F.l1_forward(prediction, target, self.reduction)
        return self._remember(ctx, loss)

    def _kernel_backward(self, grad: Tensor | float, ctx: Ctx) -> Tensor:
        return F.l1_backward(grad, ctx)


class HuberLoss(_Loss):
    """ℓ_i = ½d² for |d| < δ, else δ(|d| − ½δ), d = p_i − t_i; dℓ/dp_i = clamp(d, −δ, δ)."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        if not delta > 0:
            raise ValueError(f"HuberLoss: delta must be positive, got {delta}")
        self.delta = float(delta)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, delta={self.delta}"

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        prediction, target = self._check_same_shape(input, target)
        loss, ctx = F.huber_forward(prediction, target, self.delta, self.reduction)
        return self._remember(ctx, loss)

    def _kernel_backward(self, grad: Tensor | float, ctx: Ctx) -> Tensor:
        return F.huber_backward(grad, ctx)


class CrossEntropyLoss(_Loss):
    """Cross-entropy of logits (C,), (N, C) or (N, C, d1, ...) against class indices
    (shape without C, integer) or class probabilities (the logits' shape, floating).

    ℓ_i = −Σ_c a_ic log softmax(x_i)_c and dℓ_i/dx_i = (Σ_c a_ic) softmax(x_i) − a_i, where
    a_i is the (weighted, label-smoothed) target distribution; see
    :func:`handgrad.nn.functional.cross_entropy_forward`. log-softmax subtracts the max
    first, so no logit overflows.
    """

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(
                f"CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, "
                f"got {label_smoothing}"
            )
        if weight is not None and (weight.dim() != 1 or not weight.is_floating_point()):
            raise ValueError(
                "CrossEntropyLoss: weight must be a 1-D floating tensor of one weight per "
                f"class, got shape {tuple(weight.shape)} and dtype {weight.dtype}"
            )
        self.register_buffer("weight", weight)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def extra_repr(self) -> str:
        return (
            f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, "
            f"label_smoothing={self.label_smoothing}"
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        logits = self._check_prediction(input)
        target = self._check_tensor(target, "target")
        name = self._get_name()
        if logits.dim() == 0:
            raise ValueError(
                f"{name}: expected logits of shape (C,), (N, C) or (N, C, d1, ...), got ()"
            )
        class_dim = 0 if logits.dim() == 1 else 1
        n_classes = logits.shape[class_dim]
        if self.weight is not None:
            if self.weight.shape != (n_classes,):
                raise ValueError(
                    f"{name}: expected weight of shape ({n_classes},), one per class, "
                    f"got {tuple(self.weight.shape)}"
                )
            self._check_like(self.weight, logits, "weight", "prediction")
        if target.is_floating_point():
            if target.shape != logits.shape:
                raise ValueError(
                    f"{name}: expected probability target of shape {tuple(logits.shape)} "
                    f"(the logits'), got {tuple(target.shape)}"
                )
            if self.ignore_index >= 0:
                raise ValueError(f"{name}: ignore_index is not supported for probability targets")
            self._check_like(target, logits, "target", "prediction")
        else:
            if target.dtype not in CLASS_INDEX_DTYPES:
                raise ValueError(
                    f"{name}: target must hold class indices (an integer tensor) or "
                    f"probabilities (a floating tensor), got dtype {target.dtype}"
                )
            expected = logits.shape[:class_dim] + logits.shape[class_dim + 1 :]
            if target.shape != expected:
                raise ValueError(
                    f"{name}: expected class-index target of shape {tuple(expected)} "
                    f"(the logits' without the class dim {class_dim}), got {tuple(target.shape)}"
                )
            if target.device != logits.device:
                raise ValueError(
                    f"{name}: target is on {target.device} but prediction is on {logits.device}"
                )
            if self._every_target_a_class(target, n_classes):
                if self.weight is None and self.label_smoothing == 0.0:
                    loss, ctx = F.cross_entropy_of_labels_forward(logits, target, self.reduction)
                    return self._remember(ctx, loss)
            elif self._check_targets(target, n_classes):
                # Every target ignored: torch's answer, 0/0 = NaN for the mean (0 summed), and
                # a zero gradient (every coefficient is 0; the kernel would give 0 · ∞).
                loss, _ = F.cross_entropy_forward(
                    logits, target, self.weight, self.ignore_index, self.label_smoothing,
                    self.reduction,
                )  # fmt: skip
                return self._remember((None, logits), loss)
        loss, ctx = F.cross_entropy_forward(
            logits, target, self.weight, self.ignore_index, self.label_smoothing, self.reduction
        )
        return self._remember(ctx, loss)

    def _every_target_a_class(self, target: Tensor, n_classes: int) -> bool:
        """True when every target is in 0..C−1 and none can be ignore_index: one pass.

        The usual case, checked cheaply; anything else goes to :meth:`_check_targets`.
        """
        if target.numel() == 0 or 0 <= self.ignore_index < n_classes:
            return False
        low, high = torch.aminmax(target)
        return low.item() >= 0 and high.item() < n_classes

    def _check_targets(self, target: Tensor, n_classes: int) -> bool:
        """ValueError for a target out of range; whether every target is ignore_index."""
        name = self._get_name()
        kept = target[target != self.ignore_index]
        if kept.numel() and (kept.min() < 0 or kept.max() >= n_classes):
            bad = kept[(kept < 0) | (kept >= n_classes)][0].item()
            raise ValueError(
                f"{name}: target {bad} is out of range for {n_classes} classes "
                f"(expected 0..{n_classes - 1} or ignore_index={self.ignore_index})"
            )
        return kept.numel() == 0

    def _kernel_backward(self, grad: Tensor | float, ctx: Ctx) -> Tensor:
        if ctx[0] is None:  # every target ignored: ctx[1] is the logits
            return torch.zeros_like(ctx[1])
        return F.cross_entropy_backward(grad, ctx)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on logits x with targets t ∈ [0, 1]:

    ℓ_i = −w_i [p_w t_i log σ(x_i) + (1 − t_i) log(1 − σ(x_i))], computed without overflow;
    dℓ/dx_i = w_i [(1 − t_i) − (1 + (p_w − 1) t_i) σ(−x_i)] (= w_i(σ(x_i) − t_i) for p_w = 1).
    ``weight`` and ``pos_weight`` broadcast against the logits (pos_weight: one per class,
    along the last dim).
    """

    weight: Tensor | None
    pos_weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        logits, target = self._check_same_shape(input, target)
        for name in ("weight", "pos_weight"):
            extra = getattr(self, name)
            if extra is None:
                continue
            self._check_like(extra, logits, name, "prediction")
            try:
                fits = torch.broadcast_shapes(extra.shape, logits.shape) == logits.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"{self._get_name()}: {name} of shape {tuple(extra.shape)} does not "
                    f"broadcast to the prediction's shape {tuple(logits.shape)}"
                )
        loss, ctx = F.bce_with_logits_forward(
            logits, target, self.weight, self.pos_weight, self.reduction
        )
        return self._remember(ctx, loss)

    def _kernel_backward(self, grad: Tensor | float, ctx: Ctx) -> Tensor:
        return F.bce_with_logits_backward(grad, ctx)
