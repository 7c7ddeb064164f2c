import dataclasses

import numpy as np
import pytest
import torch

from coarse.synthface import build_synthface
from data.face_detail import DETAIL_LABEL_NAMES, DetailConfig, sample_detail

ALL_ON = DetailConfig(freckles_prob=1.0, moles_per_face=3.0, stubble_prob=1.0, wrinkles_prob=1.0, makeup_prob=1.0)
ALL_OFF = DetailConfig(freckles_prob=0.0, moles_per_face=0.0, stubble_prob=0.0, wrinkles_prob=0.0, makeup_prob=0.0)


@pytest.fixture(scope="module")
def model():
    return build_synthface(seed=0, resolution=61)


def test_same_generator_state_gives_identical_detail(model):
    for make in (lambda: np.random.default_rng(7), lambda: torch.Generator().manual_seed(7)):
        first, labels_first = sample_detail(model, make(), ALL_ON)
        second, labels_second = sample_detail(model, make(), ALL_ON)
        assert torch.equal(first, second)
        assert labels_first == labels_second


def test_different_seeds_give_different_detail(model):
    first, _ = sample_detail(model, np.random.default_rng(1), ALL_ON)
    second, _ = sample_detail(model, np.random.default_rng(2), ALL_ON)
    assert not torch.allclose(first, second)


def test_labels_have_the_documented_keys_and_follow_the_config(model):
    delta, labels = sample_detail(model, np.random.default_rng(0), ALL_ON)
    assert tuple(labels) == DETAIL_LABEL_NAMES
    assert labels["has_freckles"] == 1.0 and labels["makeup"] == 1.0
    assert labels["stubble"] > 0 and labels["wrinkles"] > 0
    assert delta.shape == (model.num_vertices, 3) and delta.dtype == torch.float32
    off, labels_off = sample_detail(model, np.random.default_rng(0), ALL_OFF)
    assert torch.count_nonzero(off) == 0
    assert all(value == 0.0 for value in labels_off.values())


def _residual_fraction(model, delta: torch.Tensor) -> float:
    """|part of delta outside the albedo span| / |delta| (least squares)."""
    target = delta.double().reshape(-1, 1)
    basis = model.albedo_base.double()
    residual = target - basis @ torch.linalg.lstsq(basis, target).solution
    return float(residual.norm() / target.norm())


@pytest.mark.parametrize("kind, minimum", [
    ("freckles_prob", 0.6), ("moles_per_face", 0.8), ("wrinkles_prob", 0.6),
    # stubble is a speckle on top of an even shadow, and the shadow is in the span
    ("stubble_prob", 0.35),
])
def test_detail_lies_outside_the_albedo_span(model, kind, minimum):
    config = dataclasses.replace(ALL_OFF, **{kind: 1.0 if kind.endswith("prob") else 3.0})
    delta, _ = sample_detail(model, np.random.default_rng(3), config)
    assert delta.abs().sum() > 0
    assert _residual_fraction(model, delta) > minimum


def test_albedo_span_check_recognises_an_in_span_change(model):
    in_span = (torch.randn(1, 80, generator=torch.Generator().manual_seed(0)) @ model.albedo_base.T).reshape(-1, 3)
    assert _residual_fraction(model, in_span) < 0.01


def test_base_plus_detail_stays_in_unit_range(model):
    gen = torch.Generator().manual_seed(0)
    pca = (torch.randn(1, 80, generator=gen) @ model.albedo_base.T).reshape(-1, 3)
    base = (model.mean_albedo + pca).clamp(0, 1)
    delta, _ = sample_detail(model, np.random.default_rng(4), ALL_ON, base_albedo=base)
    albedo = base + delta
    assert albedo.min() >= -1e-6 and albedo.max() <= 1 + 1e-6


def test_stubble_only_darkens_the_lower_face(model):
    config = dataclasses.replace(ALL_OFF, stubble_prob=1.0)
    delta, labels = sample_detail(model, np.random.default_rng(5), config)
    assert labels["stubble"] > 0
    changed = delta.abs().sum(1) > 1e-4
    regions = model.extras["regions"]
    assert (delta <= 1e-7).all()
    assert changed[regions["beard_area"]].float().mean() > 0.9
    assert not changed[regions["forehead"] | regions["eyes"]].any()


def test_wrinkles_are_thin_dark_lines(model):
    config = dataclasses.replace(ALL_OFF, wrinkles_prob=1.0)
    delta, labels = sample_detail(model, np.random.default_rng(6), config)
    darkened = delta.sum(1) < -0.01
    assert labels["wrinkles"] > 0 and (delta <= 1e-7).all()
    assert 0.005 < darkened.float().mean() < 0.25   # lines, not a wash over the face
    assert darkened[model.extras["regions"]["forehead"]].any()


def test_lipstick_changes_only_the_lips_region(model):
    config = dataclasses.replace(ALL_OFF, makeup_prob=1.0)
    for seed in range(20):
        delta, labels = sample_detail(model, np.random.default_rng(seed), config)
        if labels["lipstick"] and not labels["eyeshadow"] and not labels["blush"]:
            break
    else:
        pytest.fail("no lipstick-only draw in 20 seeds")
    changed = delta.abs().sum(1) > 1e-4
    assert changed.any()
    assert not changed[~model.extras["regions"]["lips"]].any()


def test_works_for_a_model_without_region_masks(model):
    bare = dataclasses.replace(model, extras={})
    delta, labels = sample_detail(bare, np.random.default_rng(0), ALL_ON)
    assert delta.shape == (model.num_vertices, 3)
    assert torch.isfinite(delta).all() and delta.abs().sum() > 0
    assert labels["makeup"] == 1.0


def test_rejects_an_unknown_generator(model):
    with pytest.raises(TypeError, match="face_detail.py"):
        sample_detail(model, 123)
