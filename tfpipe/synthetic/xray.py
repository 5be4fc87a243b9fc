"""Chest-X-ray-like images with independent visual patterns (classification demo).

Each pattern is a class of the multi-label demo: ``ring`` (a bright circle
outline), ``stripes`` (a patch of parallel lines), ``dots`` (a cluster of
small bright dots) and ``blob`` (a soft bright disc). They differ in shape
rather than brightness, so a small CNN must look at structure to tell them
apart, yet learns each within a few epochs.

Example:
    >>> import numpy as np
    >>> from tfpipe.synthetic.xray import draw_image
    >>> draw_image(np.random.default_rng(0), 64, ["ring", "dots"]).shape
    (64, 64, 3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PATTERNS = ("ring", "stripes", "dots", "blob")


def draw_image(rng: np.random.Generator, size: int, patterns: Sequence[str]) -> np.ndarray:
    """Draw one ``(size, size, 3)`` uint8 RGB image showing ``patterns``.

    Example:
        >>> draw_image(np.random.default_rng(1), 32, []).dtype
        dtype('uint8')
    """
    image = draw_background(rng, size)
    for name in patterns:
        PAINTERS[name](image, rng)
    tint = rng.uniform(0.95, 1.05, 3)  # scanners differ slightly in tone
    return np.clip(image[..., None] * tint, 0, 255).astype(np.uint8)


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A chest-X-ray-like field: dark surround, bright torso, darker lungs, faint ribs (float32)."""
    import cv2

    image = np.full((size, size), 25.0, np.float32)
    centre = (size // 2 + int(rng.integers(-size // 20, size // 20 + 1)), size // 2)
    cv2.ellipse(image, centre, (int(size * 0.42), int(size * 0.48)), 0, 0, 360, 105.0, -1)
    for side in (-1, 1):
        lung = (centre[0] + side * int(size * 0.18), int(size * 0.47))
        cv2.ellipse(image, lung, (int(size * 0.14), int(size * 0.3)), 0, 0, 360, 65.0, -1)
    for k in range(6):
        y = int(size * (0.25 + 0.09 * k))
        cv2.ellipse(
            image, (size // 2, y), (int(size * 0.33), int(size * 0.06)), 0, 180, 360, 85.0, 1
        )
    image = cv2.GaussianBlur(image, (0, 0), size / 60)
    return image + rng.normal(0, 6, image.shape).astype(np.float32)


def _draw_ring(image: np.ndarray, rng: np.random.Generator) -> None:
    import cv2

    size = image.shape[0]
    r = int(size * rng.uniform(0.08, 0.14))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    cv2.circle(image, (cx, cy), r, float(image[cy, cx] + 90), max(2, size // 50), cv2.LINE_AA)


def _draw_stripes(image: np.ndarray, rng: np.random.Generator) -> None:
    import cv2

    size = image.shape[0]
    half = int(size * 0.15)
    cx, cy = (int(v) for v in rng.integers(half + 2, size - half - 2, 2))
    angle = rng.uniform(0, np.pi)
    along, across = (
        np.array([np.cos(angle), np.sin(angle)]),
        np.array([-np.sin(angle), np.cos(angle)]),
    )
    for k in np.linspace(-half * 0.8, half * 0.8, 5):
        a = np.array([cx, cy]) + k * across - half * along
        b = np.array([cx, cy]) + k * across + half * along
        cv2.line(
            image,
            tuple(int(v) for v in a),
            tuple(int(v) for v in b),
            200.0,
            max(1, size // 80),
            cv2.LINE_AA,
        )


def _draw_dots(image: np.ndarray, rng: np.random.Generator) -> None:
    import cv2

    size = image.shape[0]
    spread = size * 0.12
    centre = rng.uniform(spread + 3, size - spread - 3, 2)
    for _ in range(int(rng.integers(8, 14))):
        x, y = centre + rng.uniform(-spread, spread, 2)
        cv2.circle(image, (int(x), int(y)), max(1, size // 60), 215.0, -1, cv2.LINE_AA)


def _draw_disc(image: np.ndarray, rng: np.random.Generator) -> None:
    size = image.shape[0]
    r = size * rng.uniform(0.07, 0.12)
    cy, cx = rng.uniform(r * 2, size - r * 2, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    image += 85.0 * np.exp(-((((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) ** 2))


PAINTERS = {"ring": _draw_ring, "stripes": _draw_stripes, "dots": _draw_dots, "blob": _draw_disc}
