import math

import pytest
import torch
from torch.utils.data import Dataset

from augment.occluders import composite, sample_occluder
from data.celeba import CELEBA_ATTRIBUTES
from perception.attributes import (
    AttributeNet,
    AttributeTrainConfig,
    CheckpointError,
    evaluate_attribute_net,
    load_attribute_net,
    masked_bce_loss,
    save_attribute_net,
    save_checkpoint_atomic,
    train_attribute_net,
)
from tests.procedural_faces import draw_face as draw_procedural_face
from tests.procedural_faces import one_thread, uniform  # noqa: F401  (one_thread: autouse fixture)

SIZE = 64
ATTRIBUTE_NAMES = ("glasses", "mask", "dark_skin")


def draw_face(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A procedural face with eyes, with glasses and/or a mask pasted on at random.
    Returns image (3, SIZE, SIZE) and labels (glasses, mask, dark skin) in {0, 1}."""
    face = draw_procedural_face(generator, SIZE, eyes=True)
    image = face.image
    labels = []
    for kind in ("glasses", "mask"):
        present = uniform(generator) < 0.5
        labels.append(float(present))
        if present:
            layer = sample_occluder(kind, SIZE, generator, face.landmarks)
            image = composite(image, layer.rgb, layer.alpha)
    if uniform(generator) < 0.3:  # a distractor that no label describes
        layer = sample_occluder(("hair", "noise", "texture", "hand")[int(uniform(generator) * 4)], SIZE, generator, face.landmarks)
        image = composite(image, layer.rgb, layer.alpha)
    return image, torch.tensor(labels + [float(face.dark_skin)])


class ProceduralFaceAttributes(Dataset):
    attribute_names = ATTRIBUTE_NAMES

    def __init__(self, count: int, seed: int, missing_fraction: float = 0.0):
        generator = torch.Generator().manual_seed(seed)
        self.samples = [draw_face(generator) for _ in range(count)]
        hide = torch.rand(count, len(ATTRIBUTE_NAMES), generator=generator) < missing_fraction
        for (_, labels), hidden in zip(self.samples, hide):
            labels[hidden] = float("nan")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        image, labels = self.samples[index]
        return {"image": image, "attributes": labels.clone(), "identity": f"face-{index}"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attributes")
    train = ProceduralFaceAttributes(256, seed=0, missing_fraction=0.1)
    val = ProceduralFaceAttributes(96, seed=1)
    config = AttributeTrainConfig(epochs=1, batch_size=8, lr=1e-3, image_size=SIZE, device="cpu", progress=False)
    metrics = train_attribute_net(train, val, config, log_dir=folder / "logs", checkpoint_path=folder / "net.pt")
    return metrics, val, folder


def test_short_training_beats_the_majority_baseline_on_held_out_faces(trained):
    metrics, val, _ = trained
    labels = torch.stack([val[i]["attributes"] for i in range(len(val))])
    positive_rate = labels.mean(0)
    held_out_majority = torch.maximum(positive_rate, 1 - positive_rate)  # the best constant guess per attribute
    assert metrics.attribute_names == list(ATTRIBUTE_NAMES)
    assert metrics.mean_accuracy >= float(held_out_majority.mean()) + 0.15
    assert metrics.mean_accuracy >= metrics.mean_majority_accuracy + 0.15
    dark_skin = ATTRIBUTE_NAMES.index("dark_skin")
    assert metrics.accuracy[dark_skin] >= 0.85  # chance is 0.5
    assert math.isfinite(metrics.train_loss) and math.isfinite(metrics.val_loss)


def test_training_writes_a_loadable_checkpoint_and_tensorboard_events(trained):
    metrics, val, folder = trained
    assert list((folder / "logs").glob("events.out.tfevents.*"))
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]
    model = load_attribute_net(folder / "net.pt")
    assert model.attribute_names == ATTRIBUTE_NAMES and model.image_size == SIZE
    again = evaluate_attribute_net(model, val)
    assert again.accuracy == pytest.approx(metrics.accuracy)


def test_checkpoint_roundtrip_preserves_logits_names_and_input_size(tmp_path):
    torch.manual_seed(0)
    model = AttributeNet(CELEBA_ATTRIBUTES, image_size=96).eval()
    images = torch.rand(2, 3, 96, 96)
    save_attribute_net(model, tmp_path / "sub" / "celeba.pt", metrics={"mean_accuracy": 0.5})
    loaded = load_attribute_net(tmp_path / "sub" / "celeba.pt")
    assert loaded.attribute_names == CELEBA_ATTRIBUTES and loaded.image_size == 96
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)
    assert torch.load(tmp_path / "sub" / "celeba.pt", weights_only=True)["metrics"] == {"mean_accuracy": 0.5}


def test_features_are_512_wide_and_the_head_maps_them_to_logits():
    model = AttributeNet(ATTRIBUTE_NAMES).eval()
    images = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        features = model.features(images)
        logits = model(images)
    assert features.shape == (3, 512) and logits.shape == (3, len(ATTRIBUTE_NAMES))
    assert torch.allclose(model.head(features), logits, atol=1e-6)
    assert len(CELEBA_ATTRIBUTES) == 40


def test_masked_loss_ignores_nan_labels_and_their_gradients():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    loss = masked_bce_loss(logits, targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], targets[:, 0])
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[:, 1] == 0) and torch.all(logits.grad[:, 0] != 0)
    assert masked_bce_loss(logits, torch.full((2, 2), float("nan"))) == 0


def test_majority_baseline_uses_the_given_training_positive_rate():
    class Fixed(Dataset):
        labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [float("nan"), 0.0]])

        def __len__(self):
            return 4

        def __getitem__(self, index):
            return {"image": torch.rand(3, 32, 32), "attributes": self.labels[index]}

    model = AttributeNet(["a", "b"], image_size=32)
    metrics = evaluate_attribute_net(model, Fixed(), positive_rate=torch.tensor([0.9, 0.9]))
    # Predicting "1" everywhere: attribute a is right on 2 of its 3 labels, b on 1 of 4.
    assert metrics.majority_accuracy == pytest.approx([2 / 3, 1 / 4])
    assert metrics.mean_majority_accuracy == pytest.approx((2 / 3 + 1 / 4) / 2)


def test_missing_or_foreign_checkpoints_raise_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint") as missing:
        load_attribute_net(tmp_path / "absent.pt")
    assert "\n" not in str(missing.value)
    save_checkpoint_atomic({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a 'faid-attribute-net'"):
        load_attribute_net(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_attribute_net(tmp_path / "garbage.pt")


def test_atomic_save_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "ckpt.pt"
    save_checkpoint_atomic({"format": "x", "value": 1}, target)
    save_checkpoint_atomic({"format": "x", "value": 2}, target)
    assert torch.load(target, weights_only=True)["value"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_imagenet_init_loads_only_a_local_hub_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert not AttributeNet(ATTRIBUTE_NAMES, imagenet_init=True).imagenet_initialised
    reference = torchvision_resnet18_state()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference, tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    model = AttributeNet(ATTRIBUTE_NAMES, imagenet_init=True)
    assert model.imagenet_initialised
    assert torch.equal(model.backbone.conv1.weight, reference["conv1.weight"])


def torchvision_resnet18_state() -> dict:
    import torchvision

    torch.manual_seed(123)
    return torchvision.models.resnet18(weights=None).state_dict()
