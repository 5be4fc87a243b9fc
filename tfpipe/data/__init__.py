"""The tf.data input layer: records folder in, shuffled ``uint8`` batches out.

``load()`` reads the shards written by ``tfpipe build-records`` (shard order,
shard start and a record shuffle buffer redrawn every epoch, all seeded),
parses in batches, decodes and augments in parallel, batches and prefetches;
optional class balancing, caching and the tf.data service. It imports no
model code and changes no global Keras or TensorFlow state, so it drops into
any Keras 3 program. As each epoch starts it hands the process's freed heap
memory back to the OS (``input.release_heap``; no allocator setting changes).

Example — a plain Keras model, written without the rest of tfpipe::

    import keras
    import tfpipe.data

    train_folds, val_folds = tfpipe.data.split_folds("records/kidney", val_fold=0)
    train = tfpipe.data.load("records/kidney", folds=train_folds, batch_size=16)
    val = tfpipe.data.load("records/kidney", folds=val_folds, training=False)

    inputs = keras.Input((256, 256, 3), dtype="uint8")
    x = tfpipe.data.Normalize()(inputs)                   # uint8 -> [0, 1] on the accelerator
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "binary_crossentropy")
    model.fit(train, validation_data=val, epochs=5)

Settings can come from an experiment file instead of keywords::

    from tfpipe.config import load_experiment
    exp = load_experiment("experiments/kidney.yaml")
    train = tfpipe.data.load(exp.data.output, folds=[1, 2, 3], config=exp.input)

Modules: ``pipeline`` (``load``, ``split_folds``), ``shards`` (reading),
``decode`` (parse; PNG batches through :mod:`tfpipe.io.png`), ``augment``
(random draws, TensorFlow engine), ``augment_cv`` (OpenCV engine), ``buffers``
(zero-copy outputs of both), ``exit`` (clean interpreter exit), ``heap``
(freed heap back to the OS each epoch, so RSS stays flat), ``finish``
(the tail: augment or center crop, a batch at a time), ``seeds`` (every tile's
random seed), ``colour``, ``balance``, ``tta``, ``service``, ``preprocessing``
(``Normalize``), ``plan`` (request validation).
"""

from tfpipe.config import AugmentConfig, InputConfig
from tfpipe.data.pipeline import load, split_folds
from tfpipe.data.preprocessing import Normalize
from tfpipe.data.tta import (
    TTA_NAMES,
    apply_tta,
    average_tta,
    five_crop,
    invert_tta,
    ten_crop,
    tta_predict,
    tta_transforms,
)

__all__ = [
    "TTA_NAMES",
    "AugmentConfig",
    "InputConfig",
    "Normalize",
    "apply_tta",
    "average_tta",
    "five_crop",
    "invert_tta",
    "load",
    "split_folds",
    "ten_crop",
    "tta_predict",
    "tta_transforms",
]
