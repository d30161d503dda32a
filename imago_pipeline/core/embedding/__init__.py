"""What the pretrained backbone sees in an image, with no deep-learning framework at run time.

    lite0.py          EfficientNet-Lite0: architecture, checked weights, the ONNX graph built from them
    torch_weights.py  a restricted reader for the weights file (a pickle that may not run code)
    encoder.py        image → 1280-d embedding + ImageNet classes (onnxruntime, batched)
    imagenet.py       the 1,000 class names as data, and readable tags for them
    head.py           the classification head (cat / dog / other), served from a portable .npz
    similarity.py     similar images and near-duplicate groups (cosine similarity)
"""
