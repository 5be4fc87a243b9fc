"""The demo slides draw sclerotic glomeruli differently, and change nothing else for it."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from tfpipe.synthetic.annotations import SCLEROTIC, glomerulus_features
from tfpipe.synthetic.datasets import slide_rle
from tfpipe.synthetic.slides import TILE, SlidePlan, blob_radius, plan_slide, render_window

SEED, SIZE = 3, 1536  # slide 0 of seed 3 has one healthy and two sclerotic glomeruli


def render(plan: SlidePlan) -> np.ndarray:
    """The whole slide, tile by tile, as make_demo_data writes it."""
    image = np.zeros((plan.height, plan.width, 3), np.uint8)
    for y in range(0, plan.height, TILE):
        for x in range(0, plan.width, TILE):
            h, w = min(TILE, plan.height - y), min(TILE, plan.width - x)
            image[y : y + h, x : x + w] = render_window(plan, y, x, h, w)
    return image


def masks(plan: SlidePlan) -> tuple[np.ndarray, np.ndarray]:
    """``(healthy, sclerotic)`` boolean masks of the slide's glomeruli."""
    healthy = np.zeros((plan.height, plan.width), bool)
    sclerotic = np.zeros_like(healthy)
    for blob in plan.blobs:
        if blob.glomerulus:
            inside = blob_radius(blob, 0, 0, plan.height, plan.width) < 1
            (sclerotic if blob.sclerotic else healthy)[inside] = True
    return healthy, sclerotic


def all_healthy(plan: SlidePlan) -> SlidePlan:
    """The same plan with every glomerulus drawn healthy (how all were drawn before)."""
    return replace(plan, blobs=[replace(b, sclerotic=False) for b in plan.blobs])


@pytest.fixture(scope="module")
def slide() -> tuple[SlidePlan, np.ndarray]:
    plan = plan_slide(SEED, 0, SIZE)
    return plan, render(plan)


def test_the_json_names_exactly_the_glomeruli_drawn_sclerotic():
    for index in range(3):
        plan = plan_slide(SEED, index, SIZE)
        glomeruli = [b for b in plan.blobs if b.glomerulus]
        drawn = [k for k, b in enumerate(glomeruli) if b.sclerotic]
        assert drawn == [k for k in (1, 2, 3, 6, 9, 12) if k < len(glomeruli)]
        assert not any(b.sclerotic for b in plan.blobs if not b.glomerulus)
        names = [f["properties"]["classification"]["name"] for f in glomerulus_features(plan)]
        # Glomeruli 1 and 2 share one feature, so feature k is glomerulus k + 1 from 2 on.
        assert names == [
            SCLEROTIC if glomeruli[k].sclerotic else "glomerulus"
            for k in range(len(glomeruli))
            if k != 2
        ]


def test_sclerotic_glomeruli_are_less_saturated_less_blue_and_smoother(slide):
    plan, image = slide
    healthy, sclerotic = masks(plan)
    assert healthy.any() and sclerotic.any()
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(float)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(float)
    rgb = image.astype(float)
    tissue = (hsv[..., 1] > 40) & (image.max(axis=-1) < 220)
    rest = tissue & ~healthy & ~sclerotic
    # Less saturated than healthy glomeruli and no darker, with fewer and fainter nuclei.
    assert hsv[..., 1][sclerotic].mean() < hsv[..., 1][healthy].mean() - 30
    assert grey[sclerotic].mean() > grey[healthy].mean()
    assert grey[sclerotic].std() < grey[healthy].std() / 3
    assert grey[sclerotic].std() < grey[rest].std() / 3
    # Eosinophilic: less blue per red than healthy glomeruli and than the tissue around.
    blue_per_red = rgb[..., 2] / np.maximum(rgb[..., 0], 1)
    assert blue_per_red[sclerotic].mean() < blue_per_red[healthy].mean() - 0.2
    assert blue_per_red[sclerotic].mean() < blue_per_red[rest].mean() - 0.15
    # Still tissue to the filter (experiments/kidney.yaml), and darker than it in red.
    assert tissue[sclerotic].mean() > 0.99
    assert rgb[..., 0][sclerotic].mean() < rgb[..., 0][rest].mean() - 15


def test_only_the_pixels_inside_sclerotic_glomeruli_change(slide):
    plan, image = slide
    before = all_healthy(plan)
    _, sclerotic = masks(plan)
    changed = (image != render(before)).any(axis=-1)
    np.testing.assert_array_equal(changed, sclerotic)
    # The truth is the same: RLE and polygons do not depend on how a glomerulus is drawn.
    assert slide_rle(plan) == slide_rle(before)
    geometry = [f["geometry"] for f in glomerulus_features(plan)]
    assert geometry == [f["geometry"] for f in glomerulus_features(before)]


def test_a_window_anywhere_matches_the_whole_slide(slide):
    plan, image = slide
    glomerulus = next(b for b in plan.blobs if b.sclerotic)
    y0, x0 = (max(int(c) - 100, 0) // 32 * 32 for c in (glomerulus.y, glomerulus.x))
    window = render_window(plan, y0, x0, 256, 256)
    np.testing.assert_array_equal(window, image[y0 : y0 + 256, x0 : x0 + 256])
