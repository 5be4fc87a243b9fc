"""The demo slides' shared textures and colour tables (see :mod:`tfpipe.synthetic.slides`).

Textures are periodic noise (so tiles join without seams) quantised to
levels: cell-scale shade and nuclei, tubule-scale shade, pale lumens and the
ragged tissue edge. A slide colours its tissue pixels by one look-up of
(tissue, shade, lumen, nucleus) levels in a table from :func:`colour_tables`.
Each texture is padded by one tile, so a tile's texture is a plain slice.

Example:
    >>> fine, coarse = textures(0)
    >>> sorted(fine), sorted(coarse)
    (['dense', 'nucleus', 'shade'], ['edge', 'lumen', 'shade'])
"""

from __future__ import annotations

import functools

import numpy as np

TILE = 512  # the render grid: a slide is drawn tile by tile on it
FINE_PERIOD, COARSE_PERIOD = 1024, 768  # different periods hide the repetition
SHADE_LEVELS, LUMEN_LEVELS, NUCLEUS_LEVELS = 64, 8, 16
SHADE_STEP, SHADE_BASE = 0.0125, 36  # level 36 is shade 1.0; levels span 0.55-1.34
BACKGROUND = (243.0, 241.0, 245.0)  # glass: fails the tissue filter
# Sclerotic glomeruli are hyalinised, glassy: their shade varies this fraction as much as
# the tissue's, and their few nuclei are this much fainter than the tissue's.
SCLEROTIC_SHADE, SCLEROTIC_NUCLEI = 0.3, 0.5


def _periodic_noise(rng: np.random.Generator, period: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered noise on a torus (via FFT), so it tiles seamlessly; unit std."""
    fy, fx = np.fft.fftfreq(period)[:, None], np.fft.rfftfreq(period)[None, :]
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2)).astype(np.float32)
    spectrum = np.fft.rfft2(rng.standard_normal((period, period), np.float32)) * gain
    noise = np.fft.irfft2(spectrum, s=(period, period))
    return (noise / noise.std()).astype(np.float32)


def _padded(texture: np.ndarray) -> np.ndarray:
    """Wrap a periodic texture by one tile so any tile is a plain slice of it."""
    return np.pad(texture, ((0, TILE), (0, TILE)), mode="wrap")


@functools.lru_cache(maxsize=2)
def textures(seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fine and coarse textures, shared by the slides of one seed (they cost ~0.5 s)."""
    rng = np.random.default_rng([seed, 0, 3])
    return _fine_textures(rng), _coarse_textures(rng)


def _fine_textures(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Cell-scale shade (with pixel grain) and nuclei (sparse and dense), as levels."""
    texture = _periodic_noise(rng, FINE_PERIOD, 3.0)
    grain = rng.standard_normal(texture.shape, np.float32)
    shade = np.rint((0.05 * texture - 0.015 * grain) / SHADE_STEP).astype(np.int16)
    return {
        "shade": _padded(shade),
        "nucleus": _padded(_nuclei_levels(rng, area_per_nucleus=700)),
        "dense": _padded(_nuclei_levels(rng, area_per_nucleus=90)),
    }


def _nuclei_levels(rng: np.random.Generator, area_per_nucleus: float) -> np.ndarray:
    """Periodic opacity levels of round nuclei (radius 2-4 px), dots wrapped at the edges."""
    import cv2

    m = 8  # drawing margin, folded back onto the opposite edge
    canvas = np.zeros((FINE_PERIOD + 2 * m,) * 2, np.uint8)
    n = int(FINE_PERIOD**2 / area_per_nucleus)
    for (y, x), r in zip(rng.integers(0, FINE_PERIOD, (n, 2)), rng.integers(2, 5, n), strict=True):
        cv2.circle(canvas, (int(x) + m, int(y) + m), int(r), 220, -1, cv2.LINE_AA)
    canvas = canvas.astype(np.int32)
    canvas[-2 * m : -m] += canvas[:m]
    canvas[m : 2 * m] += canvas[-m:]
    canvas[:, -2 * m : -m] += canvas[:, :m]
    canvas[:, m : 2 * m] += canvas[:, -m:]
    folded = np.minimum(canvas[m:-m, m:-m], 255)
    return (folded * (NUCLEUS_LEVELS - 1) // 255).astype(np.int16)


def _coarse_textures(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tubule-scale shade, pale lumens and the ragged tissue edge."""
    texture = _periodic_noise(rng, COARSE_PERIOD, 11.0)
    lumen = np.clip((texture - 1.3) * 2.0, 0.0, 1.0)
    return {
        "shade": _padded(np.rint(0.04 * texture / SHADE_STEP).astype(np.int16)),
        "lumen": _padded(np.rint(lumen * (LUMEN_LEVELS - 1)).astype(np.int16)),
        "edge": _padded(-0.1 * texture),
    }


def colour_tables(colours: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """uint8 RGB tables: ``tissue`` by (tissue, shade, lumen, nucleus) levels,
    ``glomerulus`` and ``sclerotic`` by (shade, nucleus), ``ring`` and ``distractor`` by shade."""
    light = 1.0 + (np.arange(SHADE_LEVELS) - SHADE_BASE) * SHADE_STEP
    nucleus = np.arange(NUCLEUS_LEVELS) / (NUCLEUS_LEVELS - 1) * 0.86
    lumen = np.arange(LUMEN_LEVELS) / (LUMEN_LEVELS - 1)
    stained = colours["tissue"] * light[:, None, None, None]  # (shade, lumen, nucleus, 3)
    stained = stained + (colours["ring"] - stained) * lumen[None, :, None, None]
    stained = stained + (colours["nucleus"] - stained) * nucleus[None, None, :, None]
    # Background: near-white with the same grain, 20x weaker.
    blank = np.broadcast_to(
        np.array(BACKGROUND) * (1.0 + (light - 1.0) * 0.05)[:, None, None, None], stained.shape
    )
    glomerulus = colours["glomerulus"] * light[:, None, None]  # (shade, nucleus, 3)
    glomerulus = glomerulus + (colours["nucleus"] * 0.9 - glomerulus) * nucleus[None, :, None]
    smooth = 1.0 + (light - 1.0) * SCLEROTIC_SHADE
    sclerotic = colours["sclerotic"] * smooth[:, None, None]
    faint = nucleus[None, :, None] * SCLEROTIC_NUCLEI
    sclerotic = sclerotic + (colours["nucleus"] - sclerotic) * faint
    tables = {
        "tissue": np.stack([blank, stained]),
        "glomerulus": glomerulus,
        "sclerotic": sclerotic,
        "ring": colours["ring"] * (0.98 + 0.02 * light[:, None]),
        "distractor": colours["distractor"] * light[:, None],
    }
    return {
        k: np.clip(np.rint(v), 0, 255).astype(np.uint8).reshape(-1, 3) for k, v in tables.items()
    }
