"""Colour jitter as one affine colour transform per tile (image only, never the mask).

Brightness, contrast, saturation and hue are all linear maps of the RGB
vector of a pixel, so they compose into one ``3 x 3`` matrix ``M`` and one
offset per tile, applied in a single pass (as NVIDIA DALI's ``ColorTwist``)::

    brightness  x + delta * 255                 delta  ~ U(-b, b)     (tf.image.adjust_brightness)
    contrast    (x - mean) * c + mean           c      ~ U(1-a, 1+a)  (every 4th row's mean)
    saturation  luma + s * (x - luma)           s      ~ U(1-a, 1+a)  (torchvision's definition)
    hue         rotation by 2 pi h in YIQ       h      ~ U(-d, d)     (fraction of the hue circle)

Why not ``tf.image.stateless_random_hue`` / ``_saturation``: their HSV kernels
cost ~4 ms per 256 x 256 tile on the 2-core reference machine, more than
decoding the PNG; the fused transform costs ~1 ms (``benchmarks/bench_input.py``
reports the cost of every op). The YIQ rotation is a different hue model
from HSV's piecewise-linear one: on tissue-like colours a rotation by ``h``
lands within ~2 uint8 levels of an HSV shift by ``1.25 h``; on saturated
noise the two differ more. As augmentation, either is a hue jitter.

Gray pixels stay gray under saturation and hue (``M @ [1, 1, 1] = [1, 1, 1]``),
so the offset is the same for all three channels. With only brightness and
contrast the transform is per-channel and runs elementwise (cheaper still).

:meth:`ColourJitter.transform` derives the map from a tile's draws for both
augmentation engines, the tf.data one (:meth:`ColourJitter.apply`) and the
Keras layer (:class:`tfpipe.data.Augment`); noise is the same distribution in
both, but not the same numbers.

Example:
    >>> jitter = ColourJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02)
    >>> out = jitter(tf.zeros([256, 256, 3], tf.uint8), tf.constant([1, 2], tf.int64))
    >>> out.dtype, out.shape
    (tf.uint8, TensorShape([256, 256, 3]))
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import tensorflow as tf

from tfpipe.data.seeds import derive, uniform

# ITU-R BT.601 luma weights and the RGB -> YIQ matrix (rows: Y, I, Q).
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
# Pixels per matmul row: a [N, 3] x [3, 3] product is slow on CPU (K = 3);
# a block-diagonal [N/8, 24] x [24, 24] does the same work in a fraction of the time.
_PIXELS_PER_ROW = 8
# The NumPy-named TensorFlow functions that the shared definitions use (``xp``):
# tf.experimental.numpy's round needs NumPy behaviour switched on, a global change.
TF_NUMPY = SimpleNamespace(
    array=tf.constant,
    clip=tf.clip_by_value,
    cos=tf.cos,
    einsum=tf.einsum,
    exp=tf.exp,
    floor=tf.floor,
    round=tf.round,
    sin=tf.sin,
    sqrt=tf.sqrt,
    stack=tf.stack,
)
# The seeds' streams of the colour draws and the noise (tfpipe.data.seeds.uniform).
_COLOUR, _NOISE = 2, 3


class ColourJitter:
    """Random brightness/contrast/saturation/hue (and Gaussian noise) for ``uint8`` RGB tiles.

    Args:
        brightness: Max brightness delta, as a fraction of the full range.
        contrast: Max relative contrast change.
        saturation: Max relative saturation change.
        hue: Max hue rotation, as a fraction of the full circle (<= 0.5).
        noise_std: Standard deviation of added Gaussian noise, in uint8 levels.

    Example:
        >>> ColourJitter(brightness=0.1).mixes_channels
        False
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        noise_std: float = 0.0,
    ) -> None:
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
        self.noise_std = noise_std

    @property
    def active(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue, self.noise_std))

    @property
    def mixes_channels(self) -> bool:
        """True when saturation or hue need the full colour matrix."""
        return self.saturation > 0 or self.hue > 0

    def draw(self, seed: tf.Tensor) -> tf.Tensor:
        """The tile's four random draws in [-1, 1) (brightness, contrast, saturation, hue).

        ``seed`` is ``[2]`` (one tile) or ``[B, 2]`` (a batch: ``[B, 4]`` draws).
        """
        return 2.0 * uniform(seed, 4, _COLOUR) - 1.0

    def transform(self, draws: Any, channels: int, xp: Any = TF_NUMPY) -> tuple[Any, Any, Any]:
        """The affine colour map of ``draws`` (shape ``[..., 4]``, one row per tile).

        ``xp`` is the namespace of ``draws`` (``numpy``, ``keras.ops`` or
        :data:`TF_NUMPY`): every engine derives its colour map here.

        Returns:
            ``(matrix [..., C, C], offset [...], gain [...])``: a pixel ``p`` maps
            to ``matrix @ p + offset + gain * mean``, where ``mean`` is the tile's
            mean value (contrast pivots around it; ``gain`` is 0 without contrast),
            all in ``uint8`` levels.
        """
        u = draws
        scale = 1.0 + self.contrast * u[..., 1]
        offset = self.brightness * 255.0 * u[..., 0]
        gain = 1.0 - scale
        if self.mixes_channels:
            base = colour_matrix(1.0 + self.saturation * u[..., 2], self.hue * u[..., 3], xp)
        else:
            base = xp.array(np.eye(channels, dtype=np.float32))
        return scale[..., None, None] * base, offset, gain

    def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Jitter one ``[H, W, C]`` ``uint8`` tile with a ``[2]`` integer seed."""
        return self.apply(image, self.draw(seed), noise_seed(seed) if self.noise_std else None)

    def apply(self, image: tf.Tensor, draws: tf.Tensor, noise: tf.Tensor | None) -> tf.Tensor:
        """Jitter one tile with its :meth:`draw` values and noise seed (None: no noise)."""
        pixels = image.shape[0] * image.shape[1] if image.shape[0] and image.shape[1] else None
        return self.apply_map(image, self.colour_map(draws, pixels), noise)

    def colour_map(self, draws: tf.Tensor, pixels: int | None) -> dict[str, tf.Tensor]:
        """What :meth:`apply_map` needs of tiles with ``pixels`` pixels, from their draws.

        Works on one tile's ``[4]`` draws or a batch's ``[B, 4]``: the tf.data
        pipeline derives the maps of a whole batch at once, so the per-tile map
        runs only the few ops that touch pixels.

        Returns:
            ``offset`` (``[...]``, with the +0.5 that makes the final truncating
            cast round to nearest), ``gain`` (with contrast; times the tile's
            mean is added to the offset), and ``block`` (with saturation or hue:
            the colour matrix for rows of pixels, see :func:`pixel_block`) or
            ``scale`` (brightness/contrast only: elementwise).
        """
        matrix, offset, gain = self.transform(draws, 3)
        out = {"offset": offset + 0.5}
        if self.contrast > 0:
            out["gain"] = gain
        if self.mixes_channels:
            out["block"] = pixel_block(matrix, pixels)
        elif self.brightness > 0 or self.contrast > 0:
            out["scale"] = matrix[..., 0, 0]  # a scaled identity
        return out

    def apply_map(
        self, image: tf.Tensor, colour_map: dict[str, tf.Tensor] | None, noise: tf.Tensor | None
    ) -> tf.Tensor:
        """Jitter one tile by its :meth:`colour_map` (None: noise only) and noise seed."""
        x = tf.cast(image, tf.float32)
        colour_map = colour_map or {}
        offset = colour_map.get("offset", 0.5)  # +0.5: the truncating cast rounds to nearest
        if "gain" in colour_map:
            offset += colour_map["gain"] * tile_mean(image)
        if "block" in colour_map:
            x = _apply_block(x, colour_map["block"]) + offset
        elif "scale" in colour_map:
            x = x * colour_map["scale"] + offset
        else:
            x = x + offset
        if noise is not None:
            x += tf.random.stateless_normal(tf.shape(x), noise, stddev=self.noise_std)
        return tf.saturate_cast(x, tf.uint8)  # clips to 0..255, then truncates


def noise_seed(seed: tf.Tensor) -> tf.Tensor:
    """The seed of a tile's Gaussian noise (``[..., 2]``), derived from its augmentation seed."""
    return derive(seed, _NOISE)


def colour_matrix(saturation: Any, hue: Any, xp: Any = TF_NUMPY) -> Any:
    """``3 x 3`` matrix that scales saturation, then rotates hue by ``hue`` of a turn.

    Both arguments may be tensors of any (equal) shape ``[...]`` of namespace
    ``xp``; the result is then ``[..., 3, 3]``, one matrix per element.

    Example:
        >>> np.allclose(colour_matrix(1.0, 0.0, np), np.eye(3), atol=1e-6)
        True
        >>> colour_matrix(tf.ones([5]), tf.zeros([5])).shape
        TensorShape([5, 3, 3])
    """
    s = saturation
    # Negative angle: positive ``hue`` then turns red towards yellow, as HSV hue shifts do.
    theta = -2.0 * math.pi * hue
    # Saturation scales the chroma (I, Q) that the hue turns, so the whole matrix is
    # GRAY + s cos(theta) COS + s sin(theta) SIN: one small product, not three
    # chained 3 x 3 products per tile.
    parts = xp.stack([s * 0.0 + 1.0, s * xp.cos(theta), s * xp.sin(theta)], axis=-1)
    return xp.einsum("...k,kij->...ij", parts, xp.array(_HUE_BASIS))


def _hue_basis() -> np.ndarray:
    """``[3, 3, 3]``: the gray, cosine and sine parts of a hue turn, as RGB matrices."""

    def in_rgb(yiq: list[list[float]]) -> np.ndarray:
        return _YIQ_TO_RGB @ np.array(yiq, np.float32) @ _RGB_TO_YIQ

    gray = in_rgb([[1, 0, 0], [0, 0, 0], [0, 0, 0]])  # = [1, 1, 1]^T LUMA
    cos = in_rgb([[0, 0, 0], [0, 1, 0], [0, 0, 1]])
    sin = in_rgb([[0, 0, 0], [0, 0, -1], [0, 1, 0]])
    return np.stack([gray, cos, sin]).astype(np.float32)


_HUE_BASIS = _hue_basis()


def tile_mean(image: tf.Tensor) -> tf.Tensor:
    """Mean value of every 4th row of the tile: what contrast scales around.

    A quarter of the work of the full mean, and as good a pivot. Gathered
    rows, not ``image[::4]``: TensorFlow's strided slice copies element by
    element and costs 10x more.
    """
    rows = tf.gather(image, tf.range(0, tf.shape(image)[0], 4))
    return tf.reduce_mean(tf.cast(rows, tf.float32))


def pixel_block(matrix: tf.Tensor, pixels: int | None) -> tf.Tensor:
    """``[..., 3k, 3k]``: ``kron(I_k, matrix^T)``, the colour matrix for rows of ``k`` pixels.

    A ``[N, 3] x [3, 3]`` product is slow on CPU (K = 3); the same work as
    ``[N/8, 24] x [24, 24]`` takes a fraction of the time, so a tile is
    multiplied as rows of 8 pixels when its pixel count allows (else 1).
    """
    k = _PIXELS_PER_ROW if pixels is not None and pixels % _PIXELS_PER_ROW == 0 else 1
    block = tf.einsum("ij,...ba->...iajb", tf.eye(k), matrix)
    return tf.reshape(block, tf.concat([tf.shape(matrix)[:-2], [3 * k, 3 * k]], 0))


def _apply_block(x: tf.Tensor, block: tf.Tensor) -> tf.Tensor:
    """``matrix @ pixel`` for each pixel of ``[H, W, 3]`` float ``x``; see :func:`pixel_block`."""
    rows = tf.reshape(x, [-1, block.shape[-1]])
    return tf.reshape(rows @ block, tf.shape(x))
