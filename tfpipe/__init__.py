"""tfpipe: fast, well-shuffled Keras input for giant images.

Stages (see docs/architecture.md):

* ``tfpipe.records`` — offline ETL from slides to sharded TFRecords.
* ``tfpipe.data`` — the tf.data input layer (``tfpipe.data.load``).
* ``tfpipe.train`` — YAML-driven Keras training with cross-validation.
* ``tfpipe.bench`` — input throughput against model step time.
* ``tfpipe.predict`` — whole-slide prediction and evaluation.

Importing ``tfpipe`` itself is cheap: it imports neither TensorFlow nor Keras.
"""

__version__ = "0.1.0"
