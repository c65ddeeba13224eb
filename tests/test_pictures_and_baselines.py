"""What a run shows (templates, filters, confusion matrices, histograms), the classical baselines,
and training on a subset."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import STEPS_PER_EPOCH, compose_config, quick_overrides, read_events
from torch import nn

from dlcourse.commands.evaluate import evaluate_checkpoint
from dlcourse.confusion import class_report, confusion_matrix, most_confused
from dlcourse.data.mnist import mnist
from dlcourse.infrastructure.errors import UserError
from dlcourse.models import CNN, MLP, LinearClassifier, NearestNeighbor, TemplateNCC
from dlcourse.pictures.charts import curves_image, nice_ticks, tick_label
from dlcourse.pictures.drawing import BODY_TOP, grid
from dlcourse.pictures.learned import model_pictures, template_captions
from dlcourse.run import train
from dlcourse.tasks import ClassificationTask

IMAGES = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_grid_places_each_tile_in_its_cell():
    tiles = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 28, 28) / 4  # tile i is all i / 4
    image = grid(tiles, columns=3, min_size=28, padding=2)
    assert image.shape == (3, 2 + 2 * 30, 2 + 3 * 30)
    for index in range(5):
        top, left = 2 + (index // 3) * 30, 2 + (index % 3) * 30
        assert torch.all(image[:, top : top + 28, left : left + 28] == index / 4)
    assert torch.all(image[:, 32:60, 62:90] == 0.5)  # the sixth cell is empty: background


def test_28_pixel_images_are_drawn_three_times_as_large():
    tile = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    image = grid(tile, columns=1, padding=0)  # the default size: 3×, nearest neighbour
    assert image.shape == (3, 84, 84)
    assert torch.equal(image[0], tile[0, 0].repeat_interleave(3, 0).repeat_interleave(3, 1))


def test_linear_templates_are_the_rows_of_w_each_named_by_its_class():
    model = LinearClassifier()
    names = [f"class {i}" for i in range(10)]
    pictures = model_pictures(model, IMAGES, class_names=names)
    assert set(pictures) == {"templates"}
    # The first tile: row 0 of W, stretched to [0, 1], 3× (PNG-ready: 1/255 steps).
    first = pictures["templates"][0, BODY_TOP + 4 : BODY_TOP + 4 + 84 : 3, 4 : 4 + 84 : 3]
    row = model.linear.weight[0].view(28, 28)
    expected = (row - row.min()) / (row.max() - row.min())
    torch.testing.assert_close(first, expected, atol=0.5 / 255 + 1e-6, rtol=0)
    assert template_captions(10, names, one_per_class=True)[0] == names
    captions, title = template_captions(800, names, one_per_class=False)  # an MLP's units
    assert captions[:2] == ["unit 0", "unit 1"] and title.startswith("first-layer weights of 100")


def test_mlp_shows_up_to_100_hidden_units_and_the_cnn_its_filters_and_maps():
    small = model_pictures(MLP(hidden_sizes=[32]), IMAGES)["templates"]
    wide = model_pictures(MLP(hidden_sizes=[300]), IMAGES)["templates"]
    assert wide.shape[2] == small.shape[2]  # 10 a row
    rows = (wide.shape[1] - BODY_TOP) / ((small.shape[1] - BODY_TOP) / 4)
    assert rows == pytest.approx(10, rel=0.02)  # 100 units: 10 rows (32 units: 4 rows)
    pictures = model_pictures(CNN(channels=[8, 16], kernel_sizes=5), IMAGES)
    assert set(pictures) == {"filters", "activations"}
    # 8 filters of 5×5, enlarged to 50×50; 4 images × 8 maps of 28×28 at 84×84.
    assert pictures["filters"].shape[1] == BODY_TOP + 2 + 50 + 2
    assert pictures["activations"].shape[1:] == (BODY_TOP + 2 + 4 * 86, 2 + 8 * 86)


def test_confusion_matrix_counts_by_hand():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert torch.equal(confusion_matrix(predictions, labels, 3), expected)


def test_class_report_and_most_confused_pairs_by_hand():
    counts = torch.tensor([[5, 1, 0], [3, 4, 1], [0, 0, 0]])  # class 2: no image, never predicted
    report = class_report(counts, ["a", "b", "c"])
    assert report["a"] == pytest.approx({"precision": 5 / 8, "recall": 5 / 6,
                                         "f1": 2 * (5 / 8) * (5 / 6) / (5 / 8 + 5 / 6),
                                         "support": 6})  # fmt: skip
    assert report["b"]["precision"] == pytest.approx(4 / 5)
    assert report["b"]["recall"] == pytest.approx(4 / 8)
    assert report["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert most_confused(counts, ["a", "b", "c"]) == [
        {"true": "b", "predicted": "a", "count": 3},
        {"true": "a", "predicted": "b", "count": 1},
        {"true": "b", "predicted": "c", "count": 1},
    ]


def test_a_review_over_batches_counts_every_image_and_keeps_the_worst_errors():
    """Fed in batches, the review's confusion matrix and top losses are those of the whole set
    at once, worst first, errors only."""
    generator = torch.Generator().manual_seed(2)
    images, labels = torch.rand(200, 1, 28, 28, generator=generator), torch.arange(200) % 10
    outputs = torch.randn(200, 10, generator=generator) * 3
    review = ClassificationTask(list("0123456789")).review()
    for start in range(0, 200, 32):
        batch = slice(start, start + 32)
        review.add(outputs[batch], (images[batch], labels[batch]))
    predictions = outputs.argmax(dim=1)
    assert torch.equal(review.counts, confusion_matrix(predictions, labels, 10))
    wrong = (predictions != labels).nonzero().flatten()
    losses = nn.functional.cross_entropy(outputs, labels, reduction="none")
    expected = wrong[losses[wrong].argsort(descending=True)][:24]
    assert review.seen == 200 and len(review.worst["losses"]) == 24
    torch.testing.assert_close(review.worst["losses"], losses[expected])
    assert torch.equal(review.worst["images"], images[expected])
    assert torch.equal(review.worst["predictions"], predictions[expected])
    pictures = review.pictures("test")
    assert set(pictures) == {"confusion_matrix", "top_losses"}
    for image in pictures.values():
        assert image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1


def test_classification_pictures_of_images_come_from_the_review_alone():
    labels = (IMAGES[:, 0, 0, 0] > 0).long()
    assert ClassificationTask(list("0123456789")).pictures(Fixed(), (IMAGES, labels)) == {}
    review = ClassificationTask(list("0123456789")).review()
    review.add(Fixed()(IMAGES), (IMAGES, labels))
    assert set(review.pictures("val")) == {"confusion_matrix"}  # no error: no top losses


class Fixed(nn.Module):
    """Predicts class (first pixel > 0) for every image."""

    def forward(self, images):
        positive = (images[:, 0, 0, 0] > 0).long()
        return nn.functional.one_hot(positive, 10).float()


def test_curve_ticks_differ_even_for_a_single_epoch():
    """After one epoch the axis spans a band around the one value: its ticks never read alike."""
    for low, high in [(1.39, 1.39), (0.9801, 0.9823), (0.0, 120.0)]:
        pad = (high - low) * 0.05 or max(abs(low) * 0.05, 0.01)
        ticks = nice_ticks(low - pad, high + pad)
        labels = [tick_label(value, ticks) for value in ticks]
        assert len(ticks) >= 3 and len(set(labels)) == len(labels), (low, high, labels)
    history = [{"epoch": 1, "train/loss": 1.39, "val/loss": 1.39}]
    assert curves_image(history, ["loss"], best_epoch=1).shape == (3, 320, 420)


def test_a_run_writes_pictures_and_histograms(tiny_mnist, tmp_path):
    cfg = compose_config(
        [
            "model=cnn",
            "model.channels=[4,8]",
            "trainer.histogram_every_n_steps=4",
            *quick_overrides(tiny_mnist),
        ]
    )
    metrics = train(cfg, tmp_path)
    for name in ("filters", "activations", "confusion_matrix", "top_losses", "curves"):
        assert (tmp_path / f"{name}.png").is_file()
    # Per class over the whole test split: the recalls, weighted by images, are test/acc.
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["classes"] == metrics["classes"] and list(saved["classes"]) == list("0123456789")
    images = sum(row["support"] for row in saved["classes"].values())
    correct = sum(row["recall"] * row["support"] for row in saved["classes"].values())
    assert images == sum(len(batch[0]) for batch in mnist(str(tiny_mnist), val_size=50).test)
    assert correct / images == pytest.approx(saved["test/acc"])
    assert all(pair["true"] != pair["predicted"] for pair in saved["most_confused"])
    events = read_events(tmp_path)
    # Layers with parameters, counted in order: conv, conv, then the two fully-connected ones.
    assert set(events.Tags()["histograms"]) == {
        f"{kind}/layer{number}_{layer}/{name}"
        for kind in ("weights", "gradients")
        for number, layer in enumerate(["Conv2d", "Conv2d", "Linear", "Linear"], start=1)
        for name in ("weight", "bias")
    }
    steps = [event.step for event in events.Histograms("gradients/layer4_Linear/bias")]
    assert steps == [4, 8, 12, 16] and STEPS_PER_EPOCH == 8  # 2 epochs of 8 steps
    assert {
        "pictures/filters",
        "pictures/val/confusion_matrix",
        "pictures/test/confusion_matrix",
    } <= set(events.Tags()["images"])


def test_template_ncc_is_the_correlation_with_each_class_mean():
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(40, 1, 4, 4, generator=generator), torch.arange(40) % 3
    model = TemplateNCC(num_classes=3, input_size=16)
    model.fit([(images[:25], labels[:25]), (images[25:], labels[25:])])  # two batches
    for c in range(3):
        torch.testing.assert_close(model.templates[c], images[labels == c].flatten(1).mean(dim=0))
    scores = model(images[:2])
    for i in range(2):
        for c in range(3):
            pearson = torch.corrcoef(torch.stack([images[i].flatten(), model.templates[c]]))[0, 1]
            assert scores[i, c].item() == pytest.approx(pearson.item(), abs=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_nearest_neighbor_matches_brute_force_in_any_chunking(metric):
    generator = torch.Generator().manual_seed(1)
    stored, labels = (
        torch.randn(50, 1, 3, 3, generator=generator),
        torch.randint(0, 4, (50,), generator=generator),
    )
    queries = torch.randn(7, 1, 3, 3, generator=generator)
    if metric == "l2":
        nearest = torch.cdist(queries.flatten(1), stored.flatten(1)).argmin(dim=1)
    else:
        nearest = (
            nn.functional.normalize(queries.flatten(1), dim=1)
            @ nn.functional.normalize(stored.flatten(1), dim=1).T
        ).argmax(dim=1)
    for chunk_size in (7, 1000):
        model = NearestNeighbor(num_classes=4, metric=metric, chunk_size=chunk_size)
        model.fit([(stored, labels)])
        assert torch.equal(model(queries).argmax(dim=1), labels[nearest])


def test_k_nearest_vote_and_a_saved_model_loads_into_a_fresh_one():
    stored = torch.tensor([[0.0], [1.0], [1.1], [5.0]]).view(4, 1, 1, 1)
    model = NearestNeighbor(num_classes=3, k=3)
    model.fit([(stored, torch.tensor([2, 1, 1, 0]))])
    # Neighbours of 0.2: 0.0 (class 2), 1.0 and 1.1 (class 1): class 1 wins the vote 2 to 1.
    assert model(torch.tensor([[[[0.2]]]])).argmax().item() == 1
    fresh = NearestNeighbor(num_classes=3, k=3)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.memory, model.memory)


@pytest.mark.parametrize("name", ["template_ncc", "nearest_neighbor"])
def test_classical_baselines_fit_without_gradient_steps_and_evaluate(name, tiny_mnist, tmp_path):
    metrics = train(compose_config([f"model={name}", *quick_overrides(tiny_mnist)]), tmp_path)
    assert metrics["steps"] == 0 and metrics["epochs"] == 0
    assert (
        metrics["test/acc"] > 0.9
    )  # each tiny class is a bright band: templates and neighbours find it
    evaluated = evaluate_checkpoint(tmp_path / "checkpoints" / "best.pt", device="cpu")
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"])


def test_train_subset_keeps_that_many_images(tiny_mnist):
    data = mnist(str(tiny_mnist), batch_size=10, val_size=50, train_subset=30)
    assert sum(len(batch[0]) for batch in data.train) == 30
    again = mnist(str(tiny_mnist), batch_size=10, val_size=50, train_subset=30)
    assert torch.equal(
        data.train.tensors[1], again.train.tensors[1]
    )  # the subset is fixed by the seed
    with pytest.raises(UserError, match="train_subset=251 must be between 1 and 250"):
        mnist(str(tiny_mnist), val_size=50, train_subset=251)


def test_test_curve_logs_the_test_split_at_every_evaluation(tiny_mnist, tmp_path):
    cfg = compose_config(["model=linear", "trainer.test_curve=true", *quick_overrides(tiny_mnist)])
    metrics = train(cfg, tmp_path)
    curve = read_events(tmp_path / "test").Scalars("curves/acc")  # beside train and val's
    assert [event.step for event in curve] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert "test_curve/acc" not in metrics  # test/* come once, from the best checkpoint
    final = curve[metrics["best_epoch"] - 1].value
    assert final == pytest.approx(metrics["test/acc"])


def test_resuming_a_classical_fit_is_a_clear_error(tiny_mnist, tmp_path):
    train(compose_config(["model=template_ncc", *quick_overrides(tiny_mnist)]), tmp_path)
    with pytest.raises(UserError, match="nothing to resume"):
        train(
            compose_config(
                [
                    "model=template_ncc",
                    f"resume={tmp_path / 'checkpoints' / 'best.pt'}",
                    *quick_overrides(tiny_mnist),
                ]
            ),
            tmp_path,
        )
