"""batchcls: batch evaluation of ImageNet classifiers on Ray and onnxruntime."""

__version__ = "0.1.0"
