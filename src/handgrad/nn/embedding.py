"""Embedding: a lookup table of learned vectors, indexed by integer ids."""

from __future__ import annotations

import torch
from torch import Tensor

from handgrad.nn import functional as F
from handgrad.nn import per_sample as _per_sample
from handgrad.nn._saving import accumulate
from handgrad.nn.convert import register_conversion
from handgrad.nn.functional import per_sample as P
from handgrad.nn.module import Module
from handgrad.nn.per_sample import FactoredGradSample, GradSample, PerSample

_INDEX_DTYPES = (torch.int64, torch.int32)


class Embedding(Module):
    """y[..., :] = W[input[...], :] for W of shape (num_embeddings, embedding_dim).

    Backward: dW += onehot(input)ᵀ g (row k collects the gradients of every position that
    looked up k), dense or — with ``sparse=True`` — a sparse COO gradient that
    :class:`handgrad.optim.SparseAdam` (or torch's) takes. There is no input gradient
    (``backward`` returns None): the input holds integers.

    Arguments as torch.nn.Embedding: ``padding_idx`` (its row starts at 0 and gets no
    gradient), ``max_norm``/``norm_type`` (rows looked up are renormalised in place to norm
    at most ``max_norm`` before the lookup), ``scale_grad_by_freq`` (each position's gradient
    divided by its index's count in the batch), ``sparse``. W ~ N(0, 1), as torch draws it.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Tensor | None = None,
        _freeze: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        if padding_idx is not None:
            if padding_idx > 0:
                if padding_idx >= num_embeddings:
                    raise AssertionError("Padding_idx must be within num_embeddings")
            elif padding_idx < 0:
                if padding_idx < -num_embeddings:
                    raise AssertionError("Padding_idx must be within num_embeddings")
                padding_idx = num_embeddings + padding_idx
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        if _freeze:
            raise ValueError(
                "Embedding: _freeze=True is not supported (handgrad parameters never require "
                "grad; leave the weight out of the optimizer instead)"
            )
        if _weight is None:
            self.weight = torch.nn.Parameter(
                torch.empty((num_embeddings, embedding_dim), device=device, dtype=dtype),
                requires_grad=False,
            )
            self.reset_parameters()
        else:
            if list(_weight.shape) != [num_embeddings, embedding_dim]:
                raise AssertionError(
                    "Shape of weight does not match num_embeddings and embedding_dim"
                )
            self.weight = torch.nn.Parameter(_weight, requires_grad=False)

    def reset_parameters(self) -> None:
        """W ~ N(0, 1), then the padding row zeroed, as torch.nn.Embedding."""
        with torch.no_grad():
            self.weight.normal_()
            if self.padding_idx is not None:
                self.weight[self.padding_idx].fill_(0)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq:
            s += ", scale_grad_by_freq=True"
        if self.sparse:
            s += ", sparse=True"
        return s

    def _check_input(self, input: object) -> Tensor:
        input = self._check_tensor(input)
        if input.dtype not in _INDEX_DTYPES:
            raise RuntimeError(
                f"{self._get_name()}: expected input to hold indices (torch.int64 or "
                f"torch.int32), got dtype {input.dtype}"
            )
        if input.numel():
            low, high = (int(bound) for bound in torch.aminmax(input))
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise IndexError(
                    f"{self._get_name()}: index {bad} in input of shape {tuple(input.shape)} is "
                    f"out of range for num_embeddings={self.num_embeddings} "
                    f"(indices must be in [0, {self.num_embeddings}))"
                )
        return input

    def forward(self, input: Tensor) -> Tensor:
        input = self._check_input(input)
        weight = self.weight
        if self.max_norm is not None:
            with torch.no_grad():
                F.embedding_renorm_(weight, input, self.max_norm, self.norm_type)
        out, ctx = F.embedding_forward(input, weight, self.padding_idx)
        self._remember(ctx, out)  # only the indices are needed
        return out

    def backward(
        self, grad_output: Tensor, input_grad: bool = True, per_sample: PerSample = False
    ) -> None:
        """Accumulates dW; returns None (integer input, no gradient). ``per_sample=True``
        also stores ``weight.grad_sample`` (:meth:`per_sample_grads`)."""
        if per_sample:
            return self._per_sample_backward(grad_output, input_grad, per_sample)
        ctx = self._recall(grad_output)
        grad_weight = F.embedding_backward(
            grad_output, ctx, sparse=self.sparse, scale_grad_by_freq=self.scale_grad_by_freq
        )
        accumulate(self.weight, grad_weight)
        return None

    def per_sample_grads(self, grad_output: Tensor, ctx: F.Ctx) -> dict[str, GradSample]:
        """Example i's dW_i[k] = Σ_{t: input[i, t] = k} g_{i,t}: its gradient rows added into
        the rows it looked up, none into ``padding_idx``'s. Materialised as one scatter-add,
        or — under ``per_sample="factored"`` — kept as the pair (one-hot rows of the indices,
        g) whose norms come from T × T Gram matrices without forming (N, V, D).

        Refused: ``sparse=True`` (DP-SGD's noise is dense, so a sparse per-sample gradient
        saves nothing) and ``scale_grad_by_freq`` (each position's scale counts its index
        over the whole batch: the examples mix, and no example's gradient is its own).
        """
        indices, _, padding_idx = ctx
        if self.sparse:
            raise ValueError(
                f"{self!r}: per-sample gradients of a sparse=True embedding are not supported "
                "(the noise DP-SGD adds is dense, so a sparse per-sample gradient saves nothing); "
                "build it with sparse=False"
            )
        if self.scale_grad_by_freq:
            raise ValueError(
                f"{self!r}: per-sample gradients are not defined with scale_grad_by_freq=True: "
                "each position's gradient is divided by its index's count over the whole batch, "
                "which mixes the examples"
            )
        if indices.dim() == 0:
            raise ValueError(
                f"{self!r}: per-sample gradients need a batch dimension; got a 0-d input"
            )
        if _per_sample._mode == "factored":
            one_hot, rows = P.embedding_grad_sample_factors(
                grad_output, indices, self.num_embeddings, padding_idx
            )
            return {"weight": FactoredGradSample(one_hot, rows)}
        return {
            "weight": P.embedding_grad_sample(
                grad_output, indices, self.num_embeddings, padding_idx
            )
        }


register_conversion(
    torch.nn.Embedding,
    Embedding,
    lambda m: {
        "num_embeddings": m.num_embeddings,
        "embedding_dim": m.embedding_dim,
        "padding_idx": m.padding_idx,
        "max_norm": m.max_norm,
        "norm_type": m.norm_type,
        "scale_grad_by_freq": m.scale_grad_by_freq,
        "sparse": m.sparse,
        "device": "meta",  # no initial weights drawn: the source's are copied in
        "dtype": m.weight.dtype,
    },
)
