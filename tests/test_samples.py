"""data.samples: collate keeps absent fields absent (None), never zero-filled."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.samples import collate_face_samples


def _photo_sample(index: int) -> dict:
    return {"image": torch.full((3, 8, 8), float(index)), "path": f"p{index}.jpg",
            "landmarks5": torch.zeros(5, 2), "transform": torch.eye(2, 3)}


def test_keys_every_sample_has_are_stacked():
    batch = collate_face_samples([_photo_sample(0), _photo_sample(1)])
    assert batch["image"].shape == (2, 3, 8, 8) and batch["image"][1].max() == 1.0
    assert batch["transform"].shape == (2, 2, 3)
    assert batch["path"] == ["p0.jpg", "p1.jpg"]


def test_keys_some_samples_lack_become_lists_with_none():
    with_attributes = dict(_photo_sample(0), attributes=torch.ones(40), split="train")
    batch = collate_face_samples([with_attributes, _photo_sample(1)])
    assert batch["image"].shape == (2, 3, 8, 8)
    assert batch["split"] == ["train", None]
    assert isinstance(batch["attributes"], list) and batch["attributes"][1] is None
    torch.testing.assert_close(batch["attributes"][0], torch.ones(40))


def test_numbers_arrays_ragged_tensors_and_nested_dicts():
    samples = [{"score": 0.5, "coeffs": np.zeros(4, np.float32), "points": torch.zeros(3, 2),
                "extra": {"a": torch.ones(2)}},
               {"score": 1.5, "coeffs": np.ones(4, np.float32), "points": torch.zeros(4, 2),
                "extra": {"a": torch.ones(2)}}]
    batch = collate_face_samples(samples)
    torch.testing.assert_close(batch["score"], torch.tensor([0.5, 1.5]))
    assert batch["coeffs"].shape == (2, 4) and batch["coeffs"][1, 0] == 1.0
    assert isinstance(batch["points"], list) and batch["points"][1].shape == (4, 2)
    assert batch["extra"]["a"].shape == (2, 2)


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError):
        collate_face_samples([])


def test_dataloader_uses_it_for_mixed_samples():
    samples = [_photo_sample(0), dict(_photo_sample(1), head_pose=torch.zeros(3))]
    batch = next(iter(DataLoader(samples, batch_size=2, collate_fn=collate_face_samples)))
    assert batch["head_pose"][0] is None and batch["head_pose"][1].shape == (3,)
