"""EfficientNet-Lite0 in standard Keras 3 layers, loaded with the pretrained weights the product serves.

This is the Keras reference of the backbone: the ONNX graph the pipeline runs
(`imago_pipeline.core.embedding.lite0`) is tested against it, and both against the PyTorch reference's
outputs (`tests/data/lite0_reference.npz`). Preprocessing is a layer of the model, as in the keras.io
examples: it takes RGB 0..255 at 224×224 and rescales to `(x − 127) / 128`. Keras' `padding="same"` is the
reference's static SAME padding (one more row and column at the bottom and right for stride 2).
"""

from __future__ import annotations

import numpy as np

from imago_pipeline.core.embedding import lite0


def _keras_name(torch_prefix: str) -> str:
    """`_blocks.3._bn1` → `block3_bn1`: a Keras layer is easy to match to its tensors."""
    return torch_prefix.replace("_blocks.", "block").replace("._", "_").lstrip("_")


class _WeightPlan:
    """Which reference tensors feed which layer; applied once the graph exists, and every tensor must be used."""

    def __init__(self):
        self.entries: list[tuple[object, str]] = []

    def add(self, layer, prefix: str):
        self.entries.append((layer, prefix))
        return layer

    def apply(self, weights: dict[str, np.ndarray]) -> None:
        from keras import layers

        used: set[str] = set()

        def take(key: str) -> np.ndarray:
            if key not in weights:
                raise KeyError(f"the weights lack {key}")
            used.add(key)
            return np.asarray(weights[key], dtype=np.float32)

        for layer, p in self.entries:
            if isinstance(layer, layers.DepthwiseConv2D):  # (channels, 1, kh, kw) → (kh, kw, channels, 1)
                values = [take(f"{p}.weight").transpose(2, 3, 0, 1)]
            elif isinstance(layer, layers.Conv2D):  # (out, in, kh, kw) → (kh, kw, in, out)
                values = [take(f"{p}.weight").transpose(2, 3, 1, 0)]
            elif isinstance(layer, layers.BatchNormalization):
                used.add(f"{p}.num_batches_tracked")
                values = [take(f"{p}.{n}") for n in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(layer, layers.Dense):
                values = [take(f"{p}.weight").T, take(f"{p}.bias")]
            else:
                raise TypeError(f"no weight conversion for {type(layer).__name__}")
            layer.set_weights(values)  # type: ignore[attr-defined]
        unused = sorted(set(weights) - used)
        if unused:
            raise ValueError(f"weights the model does not use: {unused[:5]}")


def _conv_bn(plan: _WeightPlan, x, filters: int | None, kernel: int, stride: int, conv: str, bn: str, *,
             relu6: bool, depthwise: bool = False):
    from keras import layers

    if depthwise:
        layer = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=_keras_name(conv))
    else:
        layer = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=_keras_name(conv))
    norm = layers.BatchNormalization(epsilon=lite0.BN_EPSILON, name=_keras_name(bn))
    x = plan.add(norm, bn)(plan.add(layer, conv)(x))
    return layers.ReLU(max_value=6.0, name=f"{_keras_name(bn)}_relu6")(x) if relu6 else x


def build_backbone(weights: dict[str, np.ndarray] | None = None):
    """(N, 224, 224, 3) RGB 0..255 → (N, 1280): the global average of the head's activations."""
    import keras
    from keras import layers

    weights = lite0.load_weights() if weights is None else weights
    plan = _WeightPlan()
    inputs = keras.Input((lite0.IMAGE_SIZE, lite0.IMAGE_SIZE, 3), name="rgb")
    x = layers.Rescaling(1.0 / lite0.PIXEL_SCALE, offset=-lite0.PIXEL_MEAN / lite0.PIXEL_SCALE,
                         name="normalize")(inputs)
    x = _conv_bn(plan, x, lite0.STEM_CHANNELS, 3, 2, "_conv_stem", "_bn0", relu6=True)
    for index, kernel, stride, expand, in_ch, out_ch in lite0.blocks():
        p, block_input = f"_blocks.{index}", x
        if expand != 1:
            x = _conv_bn(plan, x, in_ch * expand, 1, 1, f"{p}._expand_conv", f"{p}._bn0", relu6=True)
        x = _conv_bn(plan, x, None, kernel, stride, f"{p}._depthwise_conv", f"{p}._bn1", relu6=True, depthwise=True)
        x = _conv_bn(plan, x, out_ch, 1, 1, f"{p}._project_conv", f"{p}._bn2", relu6=False)
        if stride == 1 and in_ch == out_ch:
            x = layers.Add(name=f"block{index}_add")([x, block_input])
    x = _conv_bn(plan, x, lite0.FEATURE_DIM, 1, 1, "_conv_head", "_bn1", relu6=True)
    features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, features, name="efficientnet_lite0")
    plan.apply({k: v for k, v in weights.items() if not k.startswith("_fc.")})
    return model


def build_imagenet_head(weights: dict[str, np.ndarray] | None = None):
    """(N, 1280) features → (N, 1000) ImageNet logits: the reference's final layer."""
    import keras
    from keras import layers

    weights = lite0.load_weights() if weights is None else weights
    plan = _WeightPlan()
    features = keras.Input((lite0.FEATURE_DIM,), name="features")
    dense = plan.add(layers.Dense(lite0.IMAGENET_CLASSES, name="fc"), "_fc")
    model = keras.Model(features, dense(features), name="efficientnet_lite0_imagenet")
    plan.apply({k: v for k, v in weights.items() if k.startswith("_fc.")})
    return model
