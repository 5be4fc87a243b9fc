"""Networks, losses, metrics and the Lookahead optimizer used by ``tfpipe train``.

* :func:`build_model` / :func:`load_model` (``builders``): Unet, Linknet, FPN
  over segmentation-models encoders, and DenseNet121 (``classification``) for
  multi-label images; ``uint8`` in (``Normalize`` first), float32 probabilities out.
* ``weights``: ImageNet encoder weights from a local folder, ``init_checkpoint``
  transfer (every layer whose name and shape match).
* :func:`get_loss` (``losses``): bce, dice, jaccard, focal, bce_dice,
  bce_jaccard, lovasz.
* :class:`Dice`, :class:`IoU`, :func:`roc_auc` (``metrics``).
* :class:`Lookahead` (``lookahead``): k steps forward, one step back.

The builders and losses use segmentation-models (``SM_FRAMEWORK=tf.keras``),
which comes with the ``[train]`` extra: importing this package without it
raises :class:`tfpipe.errors.MissingExtraError` (an ``ImportError``) naming it.

Example:
    >>> from tfpipe.config import load_experiment
    >>> from tfpipe.models import build_model, get_loss
    >>> exp = load_experiment("experiments/kidney.yaml")
    >>> model = build_model(exp.model, (256, 256, 3))
    >>> model.compile("adam", get_loss(exp.train.loss))
"""

from tfpipe.errors import require_extra
from tfpipe.models.builders import build_model, load_model
from tfpipe.models.lookahead import Lookahead
from tfpipe.models.losses import LOSS_NAMES, get_loss
from tfpipe.models.metrics import Dice, IoU, roc_auc

# The modules above import segmentation-models only when a model is built; say now what is missing.
require_extra("train", "tfpipe.models")

__all__ = [
    "LOSS_NAMES",
    "Dice",
    "IoU",
    "Lookahead",
    "build_model",
    "get_loss",
    "load_model",
    "roc_auc",
]
