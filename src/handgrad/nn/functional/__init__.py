"""Pure forward/backward kernels: the arithmetic of every handgrad layer and loss.

Each operation is a pair of functions, CS231n style::

    out, ctx = relu_forward(x)
    dx = relu_backward(grad_out, ctx)

``ctx`` is a tuple holding exactly what the backward needs; nothing is hidden anywhere else.
(For a float16/bfloat16 input the activation, softmax, normalisation and loss kernels compute
in float32 and round once; their ctx is then a :class:`Float32Ctx`: the float32 kernel's ctx
and the half dtype.)
The kernels trust their arguments (the modules in :mod:`handgrad.nn` check shapes, dtypes and
devices and raise the errors); they never use autograd, so they run under
``torch.inference_mode()``.

Notation: ``g`` is the gradient arriving from above, dL/d(out); every backward returns
dL/d(input) by the chain rule, written out in its docstring.

One file per family of layers (``linear``, ``activations``, ``shape``, ``losses``, ``conv``,
``pooling``, ``normalization``, ``dropout``); this
package re-exports every kernel, so ``handgrad.nn.functional.relu_forward`` is the name to use.
"""

from handgrad.nn.functional._common import (
    Ctx,
    Float32Ctx,
    half_in_float32,
    half_in_float32_backward,
    half_in_float32_updating,
    unwrap_float32_ctx,
)
from handgrad.nn.functional.activations import (
    elu_backward,
    elu_forward,
    gelu_backward,
    gelu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    softplus_backward,
    softplus_forward,
    tanh_backward,
    tanh_forward,
)
from handgrad.nn.functional.attention import (
    AttentionCtx,
    scaled_dot_product_attention_backward,
    scaled_dot_product_attention_forward,
)
from handgrad.nn.functional.conv import (
    conv_backward,
    conv_forward,
    conv_input_grad,
    conv_transpose_backward,
    conv_transpose_forward,
    conv_weight_grad,
    pad_backward,
    pad_forward,
)
from handgrad.nn.functional.dropout import feature_dropout_backward, feature_dropout_forward
from handgrad.nn.functional.embedding import (
    embedding_backward,
    embedding_forward,
    embedding_renorm_,
)
from handgrad.nn.functional.layer_norm import (
    layer_norm_backward,
    layer_norm_backward_normalized,
    layer_norm_forward,
    layer_norm_normalize,
    layer_norm_output,
    rms_norm_backward,
    rms_norm_forward,
)
from handgrad.nn.functional.linear import (
    linear_backward,
    linear_forward,
)
from handgrad.nn.functional.losses import (
    REDUCTIONS,
    bce_with_logits_backward,
    bce_with_logits_forward,
    check_reduction,
    cross_entropy_backward,
    cross_entropy_forward,
    cross_entropy_of_labels_forward,
    huber_backward,
    huber_forward,
    l1_backward,
    l1_forward,
    log_softmax,
    mse_backward,
    mse_forward,
)
from handgrad.nn.functional.normalization import (
    batch_norm_backward,
    batch_norm_forward,
    group_norm_backward,
    group_norm_forward,
)
from handgrad.nn.functional.pooling import (
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool2d_forward,
    avg_pool2d_backward,
    avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from handgrad.nn.functional.shape import (
    dropout_backward,
    dropout_forward,
    flatten_backward,
    flatten_forward,
)
from handgrad.nn.functional.softmax import (
    log_softmax_backward,
    log_softmax_forward,
    silu_backward,
    silu_forward,
    softmax_backward,
    softmax_forward,
)

__all__ = [
    "REDUCTIONS",
    "AttentionCtx",
    "Ctx",
    "Float32Ctx",
    "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool2d_forward",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "batch_norm_backward",
    "batch_norm_forward",
    "bce_with_logits_backward",
    "bce_with_logits_forward",
    "check_reduction",
    "conv_backward",
    "conv_forward",
    "conv_input_grad",
    "conv_transpose_backward",
    "conv_transpose_forward",
    "conv_weight_grad",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "cross_entropy_of_labels_forward",
    "dropout_backward",
    "dropout_forward",
    "elu_backward",
    "elu_forward",
    "embedding_backward",
    "embedding_forward",
    "embedding_renorm_",
    "feature_dropout_backward",
    "feature_dropout_forward",
    "flatten_backward",
    "flatten_forward",
    "gelu_backward",
    "gelu_forward",
    "group_norm_backward",
    "group_norm_forward",
    "half_in_float32",
    "half_in_float32_backward",
    "half_in_float32_updating",
    "huber_backward",
    "huber_forward",
    "l1_backward",
    "l1_forward",
    "layer_norm_backward",
    "layer_norm_backward_normalized",
    "layer_norm_forward",
    "layer_norm_normalize",
    "layer_norm_output",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "linear_backward",
    "linear_forward",
    "log_softmax",
    "log_softmax_backward",
    "log_softmax_forward",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "mse_backward",
    "mse_forward",
    "pad_backward",
    "pad_forward",
    "relu_backward",
    "relu_forward",
    "rms_norm_backward",
    "rms_norm_forward",
    "scaled_dot_product_attention_backward",
    "scaled_dot_product_attention_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "silu_backward",
    "silu_forward",
    "softmax_backward",
    "softmax_forward",
    "softplus_backward",
    "softplus_forward",
    "tanh_backward",
    "tanh_forward",
    "unwrap_float32_ctx",
]
