"""Layers, activations, losses and containers with hand-written backward passes.

Every class is a :class:`torch.nn.Module` whose parameters do not require grad; ``module(x)``
runs the forward, ``module.backward(grad_output)`` returns dL/d(input) and accumulates
dL/dθ into ``param.grad``. The arithmetic lives in :mod:`handgrad.nn.functional`.

A training step, with any torch.optim optimizer::

    net = Sequential(Linear(1, 100), ReLU(), Dropout(0.1), Linear(100, 1))
    loss_fn = MSELoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    optimizer.zero_grad()
    loss = loss_fn(net(x), y)
    net.backward(loss_fn.backward(), input_grad=False)  # the input needs no gradient
    optimizer.step()

``flatten_parameters(net)`` lays every parameter (and gradient) end to end in one buffer (a
``FlatLayout``), so that an optimizer built afterwards updates a small network with a few
kernel calls.
``from_torch``/``to_torch`` convert networks of these layers both ways (weights copied);
``handgrad.check.check_module`` verifies any module's backward, yours included
(docs/writing-a-layer.md).
"""

from handgrad.nn import functional
from handgrad.nn.activations import (
    ELU,
    GELU,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from handgrad.nn.attention import MultiheadAttention
from handgrad.nn.container import Residual, Sequential
from handgrad.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from handgrad.nn.convert import TorchResidual, from_torch, register_conversion, to_torch
from handgrad.nn.dropout import Dropout2d
from handgrad.nn.embedding import Embedding
from handgrad.nn.flat import FlatLayout, flatten_parameters
from handgrad.nn.global_dropout import GlobalBatchDropout
from handgrad.nn.gpt import GPT
from handgrad.nn.gpt_torch import TorchGPT
from handgrad.nn.gradients import accumulate_grad
from handgrad.nn.layer_norm import LayerNorm, RMSNorm
from handgrad.nn.layers import Dropout, Flatten, Linear
from handgrad.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss
from handgrad.nn.module import Module
from handgrad.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm
from handgrad.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from handgrad.nn.transformer import TransformerEncoderLayer
from handgrad.nn.unflatten import Unflatten

__all__ = [
    "ELU",
    "GELU",
    "GPT",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "ConvTranspose2d",
    "CrossEntropyLoss",
    "Dropout",
    "Dropout2d",
    "Embedding",
    "FlatLayout",
    "Flatten",
    "GlobalBatchDropout",
    "GroupNorm",
    "HuberLoss",
    "Identity",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "MultiheadAttention",
    "RMSNorm",
    "ReLU",
    "Residual",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "TorchGPT",
    "TorchResidual",
    "TransformerEncoderLayer",
    "Unflatten",
    "accumulate_grad",
    "flatten_parameters",
    "from_torch",
    "functional",
    "register_conversion",
    "to_torch",
]
