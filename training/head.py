"""The classification head in Keras: a small network on the frozen backbone's embedding, three labels.

The backbone is not trained (it is ImageNet's and stays fixed, so an embedding stored once serves every
head); only this head is, in seconds. Its input is the embedding plus what the backbone's own ImageNet
classifier makes of it (`ImageNetPrior`: the log probability of "a domestic cat", "a dog breed" and
"anything else", frozen): with a few hundred non-pet examples to learn `other` from, that prior knowledge
of 1,000 classes is what keeps a lizard or a street sign out of `dog`. Dropout on the embedding is the
regulariser. The exported head (`imago_pipeline.core.embedding.head`) computes exactly what Keras does at
inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from imago_pipeline.core.embedding import imagenet, lite0
from imago_pipeline.core.embedding.head import LABELS, Dense, Head, ImageNetPrior

PRIOR_EPSILON = 1e-4


@dataclass(frozen=True)
class HeadConfig:
    hidden: int = 0  # 0: one softmax layer over [embedding, prior] (multinomial logistic regression)
    dropout: float = 0.3
    imagenet_prior: bool = True


@cache
def prior_layer_class():
    """The Keras layer of the frozen ImageNet prior (defined on first use: Keras loads only when training)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="imago")
    class ImageNetPriorLayer(keras.layers.Layer):
        """log(softmax(x · W + b) · G + ε): the ImageNet probability mass of each group of classes."""

        def __init__(self, groups: int = 3, epsilon: float = PRIOR_EPSILON, **kwargs):
            kwargs["trainable"] = False
            super().__init__(**kwargs)
            self.groups, self.epsilon = groups, epsilon

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(lite0.FEATURE_DIM, lite0.IMAGENET_CLASSES), name="kernel",
                                          trainable=False)
            self.bias = self.add_weight(shape=(lite0.IMAGENET_CLASSES,), name="bias", trainable=False)
            self.membership = self.add_weight(shape=(lite0.IMAGENET_CLASSES, self.groups), name="membership",
                                              trainable=False)

        def call(self, x):
            probabilities = ops.softmax(ops.matmul(x, self.kernel) + self.bias, axis=-1)
            return ops.log(ops.matmul(probabilities, self.membership) + self.epsilon)

        def get_config(self):
            return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon}

    return ImageNetPriorLayer


def make_head(config: HeadConfig = HeadConfig()):
    import keras
    from keras import layers

    inputs = keras.Input((lite0.FEATURE_DIM,), name="embedding")
    x = layers.Dropout(config.dropout, name="dropout")(inputs)
    if config.imagenet_prior:
        prior = prior_layer_class()(name="imagenet_prior")
        weights = lite0.load_weights()
        x = layers.Concatenate(name="with_prior")([x, prior(inputs)])
        prior.set_weights([weights["_fc.weight"].T.astype(np.float32), weights["_fc.bias"].astype(np.float32),
                           imagenet.pet_groups()])
    if config.hidden:
        x = layers.Dense(config.hidden, activation="relu", name="hidden")(x)
        x = layers.Dropout(config.dropout, name="hidden_dropout")(x)
    outputs = layers.Dense(len(LABELS), activation="softmax", name="label")(x)
    return keras.Model(inputs, outputs, name="imago_head")


def to_portable(model, embedding_version: str) -> Head:
    """The Keras head as the portable head the pipeline serves (dropout is inactive at inference). Refuses a
    model with any other layer that holds weights."""
    from keras import layers

    dense, prior = [], None
    for layer in model.layers:
        if isinstance(layer, layers.Dense):
            kernel, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
            dense.append(Dense(kernel, bias, layer.get_config()["activation"]))
        elif isinstance(layer, prior_layer_class()):
            kernel, bias, membership = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
            prior = ImageNetPrior.from_backbone(membership, layer.epsilon)
            if not (np.array_equal(prior.kernel, kernel) and np.array_equal(prior.bias, bias)):
                raise ValueError("the prior layer's ImageNet weights are not the backbone's")
        elif layer.weights:
            raise TypeError(f"the portable head has no {type(layer).__name__} layer")
    return Head(dense, LABELS, embedding_version, prior)
