"""Rendering of synthetic H&E-like kidney slides, window by window (used by demo.py).

A :class:`SlidePlan` holds everything a slide is made of: a low-resolution
tissue field (> 0 on tissue), periodic textures (shade, tubule lumens,
nuclei), a colour look-up table and the blobs. :func:`render_window` turns
any tile of the 512 px grid into pixels from global coordinates only, so
tiles join without seams and memory never depends on the slide size.

Speed: tissue pixels are coloured by one look-up in a per-slide table
(:mod:`tfpipe.synthetic.textures`); only the blobs are painted in floats.

Two kinds of glomeruli: healthy ones are dense purple with crowded nuclei;
sclerotic ones (:func:`is_sclerotic`: glomeruli 1, 2 and every third from 3
on, the ones the GeoJSON names ``sclerotic glomerulus``) are a dull eosin
pink, less saturated and less blue than healthy ones, smooth and with few
nuclei, as hyalinised glomeruli look in H&E. The kind is a function of the
glomerulus' rank, drawn from no random generator, so everything but the
pixels inside sclerotic glomeruli is the same as when all glomeruli were
drawn alike.

Example:
    >>> from tfpipe.synthetic.slides import plan_slide, render_window
    >>> plan = plan_slide(seed=0, index=0, size=1024)
    >>> render_window(plan, 0, 0, 512, 512).shape
    (512, 512, 3)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from tfpipe.synthetic.textures import (
    COARSE_PERIOD,
    FINE_PERIOD,
    LUMEN_LEVELS,
    NUCLEUS_LEVELS,
    SHADE_BASE,
    SHADE_LEVELS,
    TILE,
    colour_tables,
    textures,
)

FIELD_CELL = 32  # source pixels per cell of the low-resolution tissue field
RING = 1.22  # outer edge of the pale ring around a glomerulus, in blob radii
BLOBS_PER_TISSUE_PIXEL = 2.0e-6

# Stain colours (RGB). Over 90 % of tissue pixels (all but pale lumens) pass
# the default tissue filter of experiments/kidney.yaml (saturation > 40,
# brightness < 220); the background (demo_textures.BACKGROUND) fails it.
TISSUE = (185.0, 125.0, 168.0)
NUCLEUS = (95.0, 55.0, 135.0)
GLOMERULUS = (160.0, 92.0, 168.0)
# Sclerotic glomeruli: a dull eosin pink, less saturated than healthy glomeruli and no darker;
# less blue than any mix of tissue, nuclei and lumen, so no tissue shade has their hue, and
# darker in red than the tissue, so every glomerulus stands out from it in red. (A paler pink
# was tried: its hue is near the tissue's, and the slides' stain jitter lifts it over the
# tissue filter's brightness limit on some slides.)
SCLEROTIC = (156.0, 100.0, 108.0)
RING_COLOUR = (238.0, 222.0, 236.0)
DISTRACTOR = (192.0, 78.0, 84.0)


@dataclass(frozen=True)
class Blob:
    """An irregular rotated ellipse; the edge radius is modulated by harmonics 2-4."""

    y: float
    x: float
    ry: float
    rx: float
    cos: float
    sin: float
    harmonics: tuple[float, ...]
    glomerulus: bool
    seed: int
    sclerotic: bool = False  # a glomerulus drawn sclerotic (see is_sclerotic)

    def reach(self) -> float:
        """Distance from the centre that surely contains the blob and its ring."""
        return max(self.ry, self.rx) * (1 + sum(abs(h) for h in self.harmonics)) * RING + 2

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` around the blob and its ring, clipped to the slide."""
        r = self.reach()
        y0, x0 = max(int(self.y - r), 0), max(int(self.x - r), 0)
        return y0, x0, min(int(self.y + r) + 1, height), min(int(self.x + r) + 1, width)


@dataclass
class SlidePlan:
    """Everything needed to render any tile of one slide deterministically."""

    image_id: str
    height: int
    width: int
    seed: int
    field: np.ndarray  # (gh + 2, gw + 2) tissue field, one replicated cell of margin
    density: np.ndarray  # same grid: stain density, in shade levels (darker regions)
    fine: dict[str, np.ndarray]  # period FINE_PERIOD, padded by a tile: shade, nucleus
    coarse: dict[str, np.ndarray]  # period COARSE_PERIOD, padded: shade, lumen, edge
    lut: dict[str, np.ndarray]  # uint8 RGB tables indexed by levels, see _colour_tables
    blobs: list[Blob] = field(default_factory=list)

    @property
    def boxes(self) -> np.ndarray:
        """``(n, 4)`` array of blob boxes ``(y0, x0, y1, x1)``, computed once."""
        if getattr(self, "_boxes", None) is None or len(self._boxes) != len(self.blobs):
            boxes = [b.box(self.height, self.width) for b in self.blobs]
            self._boxes = np.array(boxes, np.int64).reshape(-1, 4)
        return self._boxes


def plan_slide(seed: int, index: int, size: int) -> SlidePlan:
    """Draw the size, tissue, textures, colours and blobs of slide ``index``.

    Each side is ``size`` +-20 %, never a multiple of 512, so edge tiles exist.

    Example:
        >>> plan = plan_slide(0, 0, 2048)
        >>> 0.8 * 2048 <= plan.height <= 1.2 * 2048 + 37
        True
    """
    rng = np.random.default_rng([seed, index, 1])
    height, width = (_odd_side(size * rng.uniform(0.8, 1.2)) for _ in range(2))
    grid = _tissue_field(rng, height, width)
    density = _density_field(rng, grid.shape)
    fine, coarse = textures(seed)
    factor, shift = rng.uniform(0.93, 1.04, 3), rng.uniform(-6, 6)
    colours = {
        "tissue": np.array(TISSUE) * factor + shift,
        "nucleus": np.array(NUCLEUS) * factor + shift,
        "glomerulus": np.array(GLOMERULUS) * factor + shift,
        "sclerotic": np.array(SCLEROTIC) * factor + shift,
        "ring": np.array(RING_COLOUR),
        "distractor": np.array(DISTRACTOR) * rng.uniform(0.92, 1.08, 3),
    }
    image_id = hashlib.sha1(f"tfpipe-demo:{seed}:{index}".encode()).hexdigest()[:9]
    plan = SlidePlan(
        image_id,
        height,
        width,
        int(rng.integers(2**31)),
        np.pad(grid, 1, mode="edge"),
        np.pad(density, 1, mode="edge"),
        fine,
        coarse,
        colour_tables(colours),
    )
    count = max(1, round(float((grid > 0).mean()) * height * width * BLOBS_PER_TISSUE_PIXEL))
    glomeruli = place_blobs(rng, plan, count, glomerulus=True)
    plan.blobs = [replace(b, sclerotic=is_sclerotic(k)) for k, b in enumerate(glomeruli)]
    plan.blobs += place_blobs(rng, plan, max(1, count // 6), glomerulus=False)
    return plan


def is_sclerotic(rank: int) -> bool:
    """Whether a slide's glomerulus number ``rank`` (from 0) is sclerotic: 1, 2, 3, 6, 9, ...

    Example:
        >>> [k for k in range(10) if is_sclerotic(k)]
        [1, 2, 3, 6, 9]
    """
    return rank in (1, 2) or (rank >= 3 and rank % 3 == 0)


def render_window(plan: SlidePlan, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Render the ``(h, w, 3)`` uint8 tile at ``(y0, x0)`` (multiples of 32, h, w <= 512)."""
    fy, fx = y0 % FINE_PERIOD, x0 % FINE_PERIOD
    cy, cx = y0 % COARSE_PERIOD, x0 % COARSE_PERIOD
    fine = {k: v[fy : fy + h, fx : fx + w] for k, v in plan.fine.items()}
    coarse = {k: v[cy : cy + h, cx : cx + w] for k, v in plan.coarse.items()}
    tissue = _field_tile(plan.field, y0, x0, h, w) > coarse["edge"]
    dark = np.rint(_field_tile(plan.density, y0, x0, h, w)).astype(np.int16)
    shade = np.clip(SHADE_BASE - fine["shade"] - coarse["shade"] - dark, 0, SHADE_LEVELS - 1)
    # int16 throughout: the largest index is 2*64*8*16 - 1 = 16383.
    index = np.where(tissue, shade + SHADE_LEVELS, shade) * LUMEN_LEVELS + coarse["lumen"]
    index = index * NUCLEUS_LEVELS + np.where(tissue, fine["nucleus"], 0)
    image = np.take(plan.lut["tissue"], index, axis=0)  # 4x faster than lut[index]
    boxes = plan.boxes
    near = (boxes[:, 0] < y0 + h) & (boxes[:, 2] > y0) & (boxes[:, 1] < x0 + w) & (boxes[:, 3] > x0)
    levels = {"shade": shade, "dense": fine["dense"], "sparse": fine["nucleus"]}
    for i in np.flatnonzero(near):
        paint_blob(image, plan.blobs[i], plan, y0, x0, levels)
    return image


def blob_radius(blob: Blob, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Normalised radius at each pixel of a window: < 1 inside the blob.

    Only +, -, *, / and sqrt are used (correctly rounded in every numpy code
    path), so a pixel gets the same value in any window: the RLE built from
    blob boxes matches the rendered tiles exactly.
    """
    f = np.float32
    dy = (np.arange(y0, y0 + h, dtype=f) + f(0.5) - f(blob.y))[:, None]
    dx = (np.arange(x0, x0 + w, dtype=f) + f(0.5) - f(blob.x))[None, :]
    u = dx * f(blob.cos) + dy * f(blob.sin)
    v = dy * f(blob.cos) - dx * f(blob.sin)
    r = np.sqrt(u * u + v * v)
    safe = np.where(r > 0, r, f(1))
    c, s = np.where(r > 0, u / safe, f(1)), v / safe
    c2, s2 = c * c - s * s, f(2) * c * s
    waves = (c2, s2, c * (f(4) * c * c - f(3)), s * (f(3) - f(4) * s * s))
    waves += (f(2) * c2 * c2 - f(1), f(2) * s2 * c2)
    edge = f(1)
    for a, wave in zip(blob.harmonics, waves, strict=True):
        edge = edge + f(a) * wave
    return np.sqrt((u / f(blob.rx)) ** 2 + (v / f(blob.ry)) ** 2) / edge


def paint_blob(image: np.ndarray, blob: Blob, plan: SlidePlan, y0: int, x0: int, levels) -> None:
    """Paint a glomerulus (purple, dense nuclei, pale ring) or a reddish distractor.

    A sclerotic glomerulus has the same ring, and inside it the smooth pink
    of its own table with the tissue's sparse nuclei. ``levels`` holds the
    tile's ``shade``, ``dense`` and ``sparse`` (nuclei) level arrays; colours
    come from the plan's tables like the tissue's.
    """
    by0, bx0, by1, bx1 = blob.box(plan.height, plan.width)
    ty0, tx0 = max(by0 - y0, 0), max(bx0 - x0, 0)
    ty1, tx1 = min(by1 - y0, image.shape[0]), min(bx1 - x0, image.shape[1])
    if ty0 >= ty1 or tx0 >= tx1:
        return
    q = blob_radius(blob, y0 + ty0, x0 + tx0, ty1 - ty0, tx1 - tx0)
    region = image[ty0:ty1, tx0:tx1]
    shade = levels["shade"][ty0:ty1, tx0:tx1]
    inside = q < 1
    if not blob.glomerulus:
        region[inside] = np.take(plan.lut["distractor"], shade[inside], axis=0)
        return
    ring = (q >= 1) & (q < RING)
    region[ring] = np.take(plan.lut["ring"], shade[ring], axis=0)
    table, nuclei = ("sclerotic", "sparse") if blob.sclerotic else ("glomerulus", "dense")
    dots = levels[nuclei][ty0:ty1, tx0:tx1][inside]
    region[inside] = np.take(plan.lut[table], shade[inside] * NUCLEUS_LEVELS + dots, axis=0)


def place_blobs(
    rng: np.random.Generator, plan: SlidePlan, count: int, glomerulus: bool
) -> list[Blob]:
    """Rejection-sample blobs lying on tissue (ring and margin included), apart from others."""
    others = plan.blobs
    centres = np.array([(b.y, b.x) for b in others]).reshape(-1, 2)
    reaches = np.array([b.reach() for b in others])
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    placed: list[Blob] = []
    for _ in range(count * 40):
        if len(placed) == count:
            break
        r, theta = rng.uniform(60, 150), rng.uniform(0, np.pi)
        blob = Blob(
            y=rng.uniform(0, plan.height),
            x=rng.uniform(0, plan.width),
            ry=r * rng.uniform(0.75, 1),
            rx=r,
            cos=float(np.cos(theta)),
            sin=float(np.sin(theta)),
            harmonics=tuple(float(a) for a in rng.uniform(-0.05, 0.05, 6)),
            glomerulus=glomerulus,
            seed=int(rng.integers(2**31)),
        )
        reach = blob.reach()
        if not (reach < blob.y < plan.height - reach and reach < blob.x < plan.width - reach):
            continue
        ys = np.append(blob.y + 1.3 * reach * np.sin(angles), blob.y)
        xs = np.append(blob.x + 1.3 * reach * np.cos(angles), blob.x)
        if field_at(plan.field, ys, xs).min() < 0.15:
            continue
        gaps = np.hypot(*(centres - (blob.y, blob.x)).T) - 1.2 * (reaches + reach)
        if gaps.size and gaps.min() < 0:
            continue
        placed.append(blob)
        centres, reaches = np.vstack([centres, (blob.y, blob.x)]), np.append(reaches, reach)
    return placed


def field_at(field: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear value of the (margin-padded) tissue field at pixel positions."""
    fy = np.clip(ys / FIELD_CELL + 0.5, 0, field.shape[0] - 1.001)
    fx = np.clip(xs / FIELD_CELL + 0.5, 0, field.shape[1] - 1.001)
    iy, ix = fy.astype(np.int64), fx.astype(np.int64)
    wy, wx = fy - iy, fx - ix
    top = field[iy, ix] * (1 - wx) + field[iy, ix + 1] * wx
    return top * (1 - wy) + (field[iy + 1, ix] * (1 - wx) + field[iy + 1, ix + 1] * wx) * wy


def _field_tile(field: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Upsample the field cells around a tile; cells align with tiles, so tiles agree."""
    import cv2

    gy, gx = y0 // FIELD_CELL, x0 // FIELD_CELL  # padded row gy is the cell before y0
    rows, cols = -(-h // FIELD_CELL) + 2, -(-w // FIELD_CELL) + 2
    patch = np.ascontiguousarray(field[gy : gy + rows, gx : gx + cols])
    up = cv2.resize(patch, (cols * FIELD_CELL, rows * FIELD_CELL), interpolation=cv2.INTER_LINEAR)
    return up[FIELD_CELL : FIELD_CELL + h, FIELD_CELL : FIELD_CELL + w]


def _odd_side(value: float) -> int:
    side = int(value)
    return side + 37 if side % TILE == 0 else side


def _tissue_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-res smooth noise thresholded so 50-70 % of the slide is tissue (> 0)."""
    import cv2

    gh, gw = -(-height // FIELD_CELL) + 1, -(-width // FIELD_CELL) + 1
    noise = rng.standard_normal((2, gh, gw)).astype(np.float32)
    big = cv2.GaussianBlur(noise[0], (0, 0), max(gh, gw) / 9)
    small = cv2.GaussianBlur(noise[1], (0, 0), 1.5)
    grid = big / (big.std() + 1e-6) + 0.25 * small / (small.std() + 1e-6)
    threshold = np.quantile(grid, 1.0 - rng.uniform(0.5, 0.7))
    return ((grid - threshold) / (grid.std() + 1e-6)).astype(np.float32)


def _density_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth regions of denser (darker) stain, 0-14 shade levels (up to 17 % darker).

    Darker tissue reaches the glomeruli's brightness, so a colour threshold
    alone cannot find them: the ring, the nuclei texture and the shape matter.
    """
    import cv2

    noise = rng.standard_normal(shape).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), max(shape) / 12)
    z = smooth / (smooth.std() + 1e-6)
    return (np.clip((z + 1.0) / 2.5, 0.0, 1.0) * 14).astype(np.float32)
