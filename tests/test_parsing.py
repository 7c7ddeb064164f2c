import pytest
import torch
from torch.utils.data import Dataset

from augment.occluders import OCCLUDER_KINDS, composite, sample_occluder
from perception.attributes import CheckpointError, save_checkpoint_atomic
from perception.parsing import (
    BACKGROUND,
    CLASS_NAMES,
    IGNORE_INDEX,
    OCCLUDER,
    SKIN,
    ParsingNet,
    ParsingTrainConfig,
    confusion_matrix,
    evaluate_parsing_net,
    iou_from_confusion,
    load_parsing_net,
    parsing_labels_from_masks,
    save_parsing_net,
    train_parsing_net,
)
from tests.procedural_faces import draw_face as draw_procedural_face
from tests.procedural_faces import one_thread, uniform  # noqa: F401  (one_thread: autouse fixture)

SIZE = 64


def draw_face(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A procedural face with 0-2 random occluders pasted on. Returns image (3, SIZE, SIZE) and
    parsing labels (SIZE, SIZE) from the drawn face and alphas."""
    face = draw_procedural_face(generator, SIZE)
    image = face.image
    occluder_alpha = torch.zeros(SIZE, SIZE)
    for _ in range(int(uniform(generator) * 3)):
        layer = sample_occluder(OCCLUDER_KINDS[int(uniform(generator) * len(OCCLUDER_KINDS))], SIZE, generator, face.landmarks)
        image = composite(image, layer.rgb, layer.alpha)
        occluder_alpha = 1 - (1 - occluder_alpha) * (1 - layer.alpha[0])
    return image, parsing_labels_from_masks(face.face_alpha, occluder_alpha)


class ProceduralFaceParsing(Dataset):
    def __init__(self, count: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.samples = [draw_face(generator) for _ in range(count)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        image, labels = self.samples[index]
        return {"image": image, "parsing": labels, "name": f"face-{index}"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parsing")
    train = ProceduralFaceParsing(128, seed=0)
    val = ProceduralFaceParsing(64, seed=1)
    config = ParsingTrainConfig(epochs=1, batch_size=8, lr=1e-3, image_size=SIZE, device="cpu", progress=False)
    metrics = train_parsing_net(train, val, config, log_dir=folder / "logs", checkpoint_path=folder / "net.pt")
    return metrics, val, folder


def test_short_training_beats_constant_class_baselines_on_held_out_faces(trained):
    metrics, _, _ = trained
    best_baseline = max(metrics.majority_mean_iou, metrics.background_mean_iou)
    assert metrics.mean_iou >= best_baseline + 0.2
    assert metrics.pixel_accuracy >= metrics.majority_pixel_accuracy + 0.1
    assert metrics.iou[SKIN] >= 0.3


def test_trained_skin_probability_is_higher_on_skin_than_elsewhere(trained):
    _, val, folder = trained
    model = load_parsing_net(folder / "net.pt")
    images = torch.stack([val[i]["image"] for i in range(16)])
    labels = torch.stack([val[i]["parsing"] for i in range(16)])
    mask = model.predict_mask(images)[:, 0]
    assert mask[labels == SKIN].mean() >= mask[labels != SKIN].mean() + 0.2


def test_training_writes_a_loadable_checkpoint_and_tensorboard_events(trained):
    metrics, val, folder = trained
    assert list((folder / "logs").glob("events.out.tfevents.*"))
    model = load_parsing_net(folder / "net.pt")
    assert model.image_size == SIZE and model.encoder_name == "resnet18"
    again = evaluate_parsing_net(model, val)
    assert again.mean_iou == pytest.approx(metrics.mean_iou)


def test_predict_mask_is_the_skin_probability_or_its_argmax():
    model = ParsingNet("resnet18").eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    soft = model.predict_mask(images)
    hard = model.predict_mask(images, hard=True)
    with torch.no_grad():
        logits = model(images)
    assert soft.shape == hard.shape == (2, 1, SIZE, SIZE)
    assert torch.allclose(soft[:, 0], torch.softmax(logits, 1)[:, SKIN], atol=1e-6)
    assert torch.equal(hard[:, 0], (logits.argmax(1) == SKIN).float())
    assert not soft.requires_grad


def test_forward_accepts_sides_not_divisible_by_32():
    model = ParsingNet("resnet18").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 40, 72)).shape == (1, len(CLASS_NAMES), 40, 72)


def test_checkpoint_roundtrip_preserves_logits_encoder_and_size(tmp_path):
    torch.manual_seed(0)
    model = ParsingNet("resnet34", image_size=96).eval()
    save_parsing_net(model, tmp_path / "parsing.pt")
    loaded = load_parsing_net(tmp_path / "parsing.pt")
    assert loaded.encoder_name == "resnet34" and loaded.image_size == 96
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)


def test_loading_another_kind_of_checkpoint_raises_a_one_line_error(tmp_path):
    save_checkpoint_atomic({"format": "faid-attribute-net"}, tmp_path / "attributes.pt")
    with pytest.raises(CheckpointError, match="expected a 'faid-parsing-net'"):
        load_parsing_net(tmp_path / "attributes.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_parsing_net(tmp_path / "missing.pt")


def test_labels_from_masks_put_occluders_over_skin_over_background():
    face = torch.tensor([[0.0, 0.9, 0.9, 0.2]])
    occluder = torch.tensor([[0.7, 0.6, 0.1, 0.0]])
    assert parsing_labels_from_masks(face, occluder).tolist() == [[OCCLUDER, OCCLUDER, SKIN, BACKGROUND]]
    assert CLASS_NAMES[BACKGROUND] == "background" and CLASS_NAMES[SKIN] == "skin" and CLASS_NAMES[OCCLUDER] == "occluder"


def test_iou_counts_labelled_pixels_only():
    labels = torch.tensor([[0, 0, 1, 1, 2, IGNORE_INDEX]])
    predicted = torch.tensor([[0, 1, 1, 1, 0, 2]])
    confusion = confusion_matrix(predicted, labels)
    assert confusion.sum() == 5
    iou = iou_from_confusion(confusion)
    # background: 1 hit / (2 true + 2 predicted - 1); skin: 2 / (2 + 3 - 2); occluder: 0 / 1.
    assert iou.tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])


def test_unknown_encoder_is_rejected():
    with pytest.raises(ValueError, match="unknown parsing encoder"):
        ParsingNet("vgg16")
