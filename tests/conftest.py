"""Shared pytest setup: quiet TensorFlow, CPU only, segmentation-models on tf.keras."""

import os

# Must be set before TensorFlow or segmentation-models are imported by any test.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
