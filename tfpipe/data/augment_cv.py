"""The OpenCV augmentation engine: a whole batch per call, same draws as the TensorFlow ops.

Why a second engine: TensorFlow's CPU kernels move ``uint8`` pixels one
element at a time: on the 2-core reference machine a transpose of a
256 x 256 RGB tile costs ~450 µs, a reverse ~300 µs, so flips and quarter
turns of a tile and its mask cost ~0.6 ms, and the fused colour transform
~1 ms more: together half of what decoding the PNG costs. OpenCV's SIMD loops
do the same moves in 20-40 µs and ``cv2.transform`` applies the ``3 x 4``
colour matrix with rounding and saturation in one pass (~115 µs). One
``tf.numpy_function`` call per batch spreads its fixed cost (~0.1-0.2 ms)
over the batch, and OpenCV releases the GIL while it works, so the parallel
batch maps of tf.data still use every core.
``benchmarks/bench_input.py`` measures both engines.

The random draws stay TensorFlow ops, taken for the whole batch
(:meth:`tfpipe.data.augment.Augmenter.draw`); only their application runs
here. Geometry is identical to the TensorFlow engine; colours agree within
one ``uint8`` level and bilinear crops within two (OpenCV computes in fixed
point); noise comes from NumPy's Philox generator keyed by the same per-tile
seed, so it is as reproducible but not the same numbers.

Limit: this is Python code, so a tf.data service worker in another process
cannot run it; :func:`tfpipe.data.plan.augment_engine` picks the TensorFlow
engine there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
import tensorflow as tf

from tfpipe.data.buffers import OUTPUTS
from tfpipe.data.exit import release_iterators_at_exit
from tfpipe.io.scratch import thread_buffer

if TYPE_CHECKING:
    from tfpipe.data.augment import Augmenter

# OpenCV flip codes for [reverse rows, reverse columns].
_FLIP_CODES = {(True, False): 0, (False, True): 1, (True, True): -1}


def apply_batch(
    aug: Augmenter, images: tf.Tensor, masks: tf.Tensor | None, draws: dict[str, tf.Tensor]
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Augment ``[B, H, W, C]`` ``uint8`` tiles (and masks) with batched ``draws``."""
    release_iterators_at_exit()
    b, c = tf.shape(images)[0], images.shape[-1]

    def given(key: str, dtype: tf.DType) -> tf.Tensor:
        # numpy_function takes tensors only: an absent op is an empty [B, 0] column.
        return draws[key] if key in draws else tf.zeros([b, 0], dtype)

    if "colour" in draws:
        matrix, offset, gain = aug.colour.transform(draws["colour"], c)
    else:
        matrix, offset, gain = tf.zeros([b, 0, 0]), tf.zeros([b]), tf.zeros([b])
    kernel = functools.partial(
        augment_tiles, size=aug.size, resample=aug.resample, noise_std=aug.colour.noise_std
    )
    inputs = [
        images,
        tf.zeros([b, 0], tf.uint8) if masks is None else masks,
        given("box", tf.int32),
        given("flags", tf.bool),
        matrix,
        offset,
        gain,
        given("seed", tf.int64),
    ]
    out, out_masks = tf.numpy_function(kernel, inputs, [tf.uint8, tf.uint8], stateful=False)
    side = [aug.size, aug.size]
    out = tf.ensure_shape(out, [images.shape[0], *side, c])
    if masks is None:
        return out, None
    return out, tf.ensure_shape(out_masks, [masks.shape[0], *side, masks.shape[-1]])


def augment_tiles(
    images: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray,
    flags: np.ndarray,
    matrices: np.ndarray,
    offsets: np.ndarray,
    gains: np.ndarray,
    seeds: np.ndarray,
    *,
    size: int,
    resample: bool,
    noise_std: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The NumPy side of :func:`apply_batch`: one tile at a time, in OpenCV.

    An op whose column is empty (``boxes.shape[1] == 0`` …) is off; ``masks``
    of shape ``[B, 0]`` means no masks (classification). Each tile's last op
    writes straight into the output batch: every pass over the pixels counts.
    """
    n, c = images.shape[0], images.shape[-1]
    out = OUTPUTS.take((n, size, size, c))
    has_masks = masks.ndim == 4
    out_masks = OUTPUTS.take((n, size, size, masks.shape[-1])) if has_masks else masks
    # Per-tile Python work counts too (~60 µs of ~270 µs per tile before these):
    # convert the draws once per batch, and build every affine matrix at once.
    box_list = boxes.tolist() if boxes.shape[1] else None
    flag_list = flags.tolist() if flags.shape[1] else None
    affines = _affines(matrices, offsets) if matrices.shape[1] else None
    for i in range(n):
        image, mask = images[i], masks[i] if has_masks else None
        if mask is not None and _empty(mask):
            out_masks[i] = 0
            mask = None
        if box_list is not None:
            image, mask = crop(image, mask, box_list[i], size, resample)
        colour_dst = _plane(out[i])
        # 1 tile in 8 keeps its orientation: the colour op then reads it where it is.
        moved = flag_list is not None and any(flag_list[i])
        if moved:
            # Between flip and colour the tile goes through this thread's scratch buffer.
            between = colour_dst if affines is None else thread_buffer("flipped", colour_dst.shape)
            image = flip(image, flag_list[i], between)
            if mask is not None:
                flip(mask, flag_list[i], _plane(out_masks[i]))
        elif mask is not None:
            out_masks[i] = mask
        if affines is not None:
            if gains[i]:
                affines[i, :, -1] += gains[i] * _mean(image)
            seed = seeds[i] if seeds.shape[1] else None
            colour(image, affines[i], noise_std, seed, colour_dst)
        elif not moved:
            out[i] = image
    return out, out_masks


def _affines(matrices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``[B, C, C + 1]`` matrices for ``cv2.transform``: each ``[matrix | offset]``."""
    n, c = matrices.shape[:2]
    affines = np.empty((n, c, c + 1), np.float32)
    affines[:, :, :c] = matrices
    affines[:, :, c] = offsets[:, None]
    return affines


def _empty(mask: np.ndarray) -> bool:
    plane = _plane(mask)
    return not (cv2.countNonZero(plane) if plane.ndim == 2 else plane.any())


def _mean(image: np.ndarray) -> float:
    """Mean of every 4th row over all channels, as ``colour.tile_mean``.

    Rows as one channel of ``width * channels`` values: OpenCV sums those with
    SIMD (~4 µs per 256 x 256 RGB tile against ~15 µs for ``cv2.mean`` per channel).
    """
    rows = image[::4]
    flat = rows.reshape(rows.shape[0], -1)  # a view: each row's pixels are contiguous
    return cv2.sumElems(flat)[0] / flat.size


def _plane(x: np.ndarray) -> np.ndarray:
    """A single-channel tile as 2-D: OpenCV reads and writes ``[H, W, 1]`` that way."""
    return x[..., 0] if x.shape[-1] == 1 else x


def crop(
    image: np.ndarray, mask: np.ndarray | None, box: Sequence[int], size: int, resample: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut ``[top, left, height, width]``; resize to ``size`` (bilinear / nearest) when asked.

    A resized image is this thread's scratch buffer: the next resized crop on
    the thread overwrites it.
    """
    top, left, h, w = (int(v) for v in box)
    image = image[top : top + h, left : left + w]
    mask = None if mask is None else mask[top : top + h, left : left + w]
    if resample:
        # Into this thread's buffer: the tile is then read once more, by the next op.
        resized = thread_buffer("resized", (size, size, image.shape[-1]))
        cv2.resize(image, (size, size), dst=_plane(resized), interpolation=cv2.INTER_LINEAR)
        image = resized
        if mask is not None:
            # Pixel centres, as tf.image.resize; OpenCV's nearest modes round differently.
            mask = mask[_nearest(h, size)][:, _nearest(w, size)]
    return image, mask


@functools.lru_cache(maxsize=256)
def _nearest(side: int, size: int) -> np.ndarray:
    """Source index of each of ``size`` outputs: tf.image.resize's nearest, in float32."""
    scale = np.float32(side) / np.float32(size)
    centres = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(centres).astype(np.int64), side - 1)


def flip(x: np.ndarray, flags: Sequence[bool], dst: np.ndarray | None = None) -> np.ndarray:
    """Optionally transpose, then reverse rows and/or columns (as ``augment.apply_flags``).

    Seven of the eight cases are one OpenCV call (a rotation is a transpose
    and one reverse); the anti-transpose takes two.
    """
    x = _plane(x)
    transpose, rows, cols = flags
    if transpose and rows != cols:
        code = cv2.ROTATE_90_COUNTERCLOCKWISE if rows else cv2.ROTATE_90_CLOCKWISE
        return cv2.rotate(x, code, dst=dst)
    if transpose:
        x = cv2.transpose(x, dst=None if rows else dst)
    if rows or cols:
        return cv2.flip(x, _FLIP_CODES[(rows, cols)], dst=dst)
    if dst is not None:
        dst[...] = x
        return dst
    return x


def colour(
    image: np.ndarray,
    affine: np.ndarray,
    noise_std: float,
    seed: np.ndarray | None,
    dst: np.ndarray | None = None,
) -> np.ndarray:
    """``affine @ [pixel, 1]`` for every pixel, plus noise; rounded to uint8."""
    image = _plane(image)
    if seed is None:
        return cv2.transform(image, affine, dst=dst)  # rounds to nearest and saturates
    x = cv2.transform(image.astype(np.float32), affine)
    rng = np.random.Generator(np.random.Philox(key=seed.astype(np.int64).view(np.uint64)))
    x += rng.standard_normal(x.shape, np.float32) * np.float32(noise_std)
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if dst is not None:
        dst[...] = out.reshape(dst.shape)
        return dst
    return out
