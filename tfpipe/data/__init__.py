"""The tf.data input layer: records folder in, shuffled ``uint8`` batches out.

``load()`` reads the shards written by ``tfpipe build-records`` (shard order,
shard start and a record shuffle redrawn every epoch, all seeded), parses in
batches, decodes and augments in parallel, batches and prefetches; optional
class balancing, caching and the tf.data service. The dataset is a plain
tf.data graph of TensorFlow ops: its iterator saves and restores with
``tf.train.Checkpoint``, the tf.data service can run all of it, and a
process can stop reading at any point and exit. It imports no model code and
changes no global Keras or TensorFlow state, so it drops into any Keras 3
program, on any backend (TensorFlow, JAX, PyTorch).

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
``seeds`` (epoch keys and every tile's seed), ``decode`` (parse, decode),
``augment`` (the augmentation: random draws and ops), ``colour``,
``finish`` (augment or center crop a tile), ``mix`` (MixUp, CutMix), ``balance``,
``service``, ``preprocessing`` (``Normalize``), ``plan`` (request validation).
"""

from tfpipe.config import AugmentConfig, InputConfig
from tfpipe.data.augment_layer import Augment
from tfpipe.data.pipeline import load, split_folds
from tfpipe.data.preprocessing import Normalize

__all__ = ["Augment", "AugmentConfig", "InputConfig", "Normalize", "load", "split_folds"]
