"""The pretrained backbone: our Keras 3 EfficientNet-Lite0 and the ONNX graph the product runs reproduce the
PyTorch reference, agree with each other on real photos, see the upright image, and load without
TensorFlow or a download.

`data/lite0_reference.npz` holds the PyTorch reference implementation's features and ImageNet logits for
`synthetic_images()` (written once with torch 2.13 in a scratch environment; the product never imports
torch).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imago_pipeline.core.embedding import encoder as embedding_encoder
from imago_pipeline.core.embedding import imagenet, lite0
from tests.conftest import REPO, shared

GOLDEN = Path(__file__).with_name("data") / "lite0_reference.npz"


def synthetic_images() -> np.ndarray:
    """Two 224×224 RGB images made by arithmetic (a high-frequency texture, a colour ramp): identical on
    every machine, so the reference outputs can be a fixture."""
    i, j = np.meshgrid(np.arange(224), np.arange(224), indexing="ij")
    c = np.arange(3)
    texture = (i[..., None] * 7 + j[..., None] * 13 + c * 101 + (i * j)[..., None] % 17) % 256
    ramp = np.stack([i, j, (i + j) // 2], axis=-1) * 255 // 446
    return np.stack([texture, ramp]).astype(np.uint8)


@pytest.fixture(scope="module")
def keras_models():
    from training.backbone import build_backbone, build_imagenet_head

    return build_backbone(), build_imagenet_head()


@pytest.fixture(scope="module")
def encoder():
    return embedding_encoder.Encoder()


def _photos() -> list[Path]:
    return (sorted(shared("catsdogs", "val", "cat").glob("*.jpg"))[:6]
            + sorted(shared("catsdogs", "val", "dog").glob("*.jpg"))[:6]
            + [shared("exif", "exif-samples", "jpg", "gps", "DSCN0010.jpg"),
               shared("ocr", "tesseract-test", "phototest.tif"), *sorted(shared("ocr-photos").glob("*.png"))[:2]])


def test_keras_port_matches_the_pytorch_reference(keras_models):
    backbone, head = keras_models
    golden = np.load(GOLDEN)
    features = backbone.predict_on_batch(synthetic_images())
    logits = head.predict_on_batch(features)
    # float32 summation-order noise is ~1e-5; a wrong transpose, padding or epsilon shows as > 1e-2
    np.testing.assert_allclose(features, golden["features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, golden["logits"], atol=1e-4, rtol=0)
    assert backbone.count_params() == 3_413_024 and head.count_params() == 1_281_000  # 4.69 M: Lite0


def test_onnx_graph_matches_the_reference_and_the_keras_port_on_real_photos(keras_models, encoder):
    golden = np.load(GOLDEN)
    features, logits = encoder.run(synthetic_images())
    np.testing.assert_allclose(features, golden["features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, golden["logits"], atol=1e-4, rtol=0)

    backbone, head = keras_models
    pixels = np.stack([embedding_encoder.pixels(p.read_bytes()) for p in _photos()])
    onnx_features, onnx_logits = encoder.run(pixels)
    keras_features = backbone.predict_on_batch(pixels)
    keras_logits = head.predict_on_batch(keras_features)
    assert np.abs(onnx_features - keras_features).max() / np.abs(keras_features).max() < 1e-4
    assert np.abs(onnx_logits - keras_logits).max() / np.abs(keras_logits).max() < 1e-4
    assert (onnx_logits.argmax(1) == keras_logits.argmax(1)).all()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float32), b.astype(np.float32)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_the_embedding_is_of_the_upright_image(encoder):
    """One picture stored upside down (EXIF orientation 3, JPEG) and sideways (6, WebP) embeds alike once
    turned upright (measured 0.97), unlike its pixels as stored (0.59–0.62)."""
    files = [shared("exif", "pillow", name) for name in ("hopper_orientation_3.jpg", "hopper_orientation_6.webp")]
    upright = [encoder.encode_images([f.read_bytes()])[0].vector for f in files]
    as_stored = [encoder.encode(np.asarray(Image.open(f).convert("RGB").resize((224, 224)))[None])[0].vector
                 for f in files]
    assert _cosine(*upright) > 0.95
    assert _cosine(*as_stored) < 0.8 and _cosine(upright[1], as_stored[1]) < 0.8


def test_imagenet_head_sees_cats_and_dogs(encoder):
    """The backbone's own ImageNet classifier, with the class list shipped as data: most pet photos have a
    domestic cat or dog class in their top 5 (the head on the embedding does better: test_classification)."""
    hits = 0
    paths = sorted(shared("catsdogs", "val", "cat").glob("*.jpg"))[:10] + \
        sorted(shared("catsdogs", "val", "dog").glob("*.jpg"))[:10]
    for path, result in zip(paths, encoder.encode_images([p.read_bytes() for p in paths])):
        cats, dogs = imagenet.pet_probabilities(result.imagenet)
        hits += (cats > dogs) == (path.parent.name == "cat")
        assert len(result.imagenet) == 5 and result.vector.shape == (1280,) and result.vector.dtype == np.float16
    assert hits >= 17, hits


def test_imagenet_classes_and_tags():
    names = imagenet.classes()
    assert len(names) == 1000 and names[281].name == "tabby" and names[207].name == "golden retriever"
    assert names[0].wnid == "n01440764" and names[999].name == "toilet tissue"
    assert imagenet.class_tags(281) == ("cat", "tabby") and imagenet.subject(281) == "tabby cat"
    assert imagenet.class_tags(978) == ("scenery", "beach", "sea") and imagenet.class_tags(971) == ("bubble",)
    assert "dog" in imagenet.class_tags(151) and "dog" not in imagenet.class_tags(269)  # a wolf is not a dog
    assert imagenet.content_tags([(207, 0.3), (208, 0.3), (916, 0.1)])[0] == ("dog", 0.6)


def test_loading_the_encoder_imports_no_deep_learning_framework():
    code = ("import sys; from imago_pipeline.core.embedding.encoder import shared_encoder; shared_encoder(); "
            "bad = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_weights_are_checked_and_the_graph_uses_every_tensor():
    weights = dict(lite0.load_weights())
    weights.pop("_blocks.3._bn1.running_var")
    with pytest.raises(KeyError, match="running_var"):
        lite0.build_onnx(weights)
    extra = {**lite0.load_weights(), "_unused.weight": np.zeros(1, dtype=np.float32)}
    with pytest.raises(ValueError, match="_unused"):
        lite0.build_onnx(extra)
