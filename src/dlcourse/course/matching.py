"""Classical baselines as the lecture means them: template matching in a scene, and retrieval.

    python -m dlcourse.course.matching                          # MNIST from DLCOURSE_DATA_DIR
    python -m dlcourse.course.matching --data-dir ../shared/data --out outputs/matching

Writes two pictures and prints what they show:
- `template_matching.png`: a test digit is the template; a 140×140 scene holds it among other
  digits. Normalised cross-correlation (NCC) of the template with every window of the scene
  gives a map whose peak is the best location (red box; the true place in green). Four scenes:
  the digit as it was cut out (NCC 1 at the right place), then the lecture's failure cases —
  partly occluded, scaled by 1.5 and rotated by 90° — where the score at the target drops and
  the peak can move to another digit: matching pixels is not recognising shapes.
- `retrieval.png`: for each query, the k most similar training images by pixel distance (what
  `model=nearest_neighbor` votes with), captioned with their labels (green: the query's class).
  Test digits find their class, and so does a 7 drawn with a thin pen; the same test digit
  shifted by 6 pixels, or inverted (dark ink on white), finds neighbours of other classes:
  nearness in pixel space is not nearness in meaning.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F

from dlcourse.data.idx_files import DIGITS, read_split
from dlcourse.infrastructure.files import open_new
from dlcourse.models.classical import NearestNeighbor

CELL = 28  # one MNIST digit; the scene is a 5×5 grid of such cells
Query = tuple[str, torch.Tensor, int]  # caption, (28, 28) image in [0, 1], true label


def ncc_map(scene: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """NCC of the (h, w) template with each (h, w) window of the (H, W) scene → (H−h+1, W−w+1),
    each in [−1, 1]: Σ (window − its mean)(template − its mean) / (‖…‖ ‖…‖). A flat window
    (no contrast, e.g. empty background) scores 0."""
    centred = (template - template.mean()).double()[None, None]  # (1, 1, h, w)
    image = scene.double()[None, None]  # (1, 1, H, W)
    ones = torch.ones_like(centred)
    # The centred template sums to 0, so Σ window · centred already ignores the window's mean.
    numerator = F.conv2d(image, centred)
    sums, squares = F.conv2d(image, ones), F.conv2d(image.square(), ones)
    window_norms = (squares - sums.square() / centred.numel()).clamp_min(0).sqrt()
    scores = numerator / (window_norms * centred.norm())
    return torch.where(window_norms > 1e-9, scores, 0.0)[0, 0].float()


def paste(scene: torch.Tensor, image: torch.Tensor, centre: tuple[int, int]) -> None:
    """Paste `image` centred at `centre` (row, column); where digits meet, the brighter wins."""
    top, left = centre[0] - image.shape[0] // 2, centre[1] - image.shape[1] // 2
    window = scene[top : top + image.shape[0], left : left + image.shape[1]]
    window.copy_(torch.maximum(window, image))


def make_scene(
    target: torch.Tensor, others: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """A 140×140 scene: `target` (any size) in the centre cell, `others` (N, 28, 28) in random
    border cells, far enough away that even a 1.5× target overlaps none of them."""
    scene = torch.zeros(5 * CELL, 5 * CELL)
    cells = [(row, column) for row in range(5) for column in range(5)]
    border = [cell for cell in cells if 0 in cell or 4 in cell]
    chosen = torch.randperm(len(border), generator=generator)[: len(others)]
    for digit, index in zip(others, chosen.tolist()):
        row, column = border[index]
        paste(scene, digit, (row * CELL + CELL // 2, column * CELL + CELL // 2))
    paste(scene, target, (2 * CELL + CELL // 2, 2 * CELL + CELL // 2))
    return scene


def failure_cases(template: torch.Tensor) -> dict[str, torch.Tensor]:
    """The template as it appears in each scene: unchanged, occluded, scaled, rotated."""
    occluded = template.clone()
    occluded[4:18, 6:22] = 0.6  # a grey patch over the digit's upper part
    scaled = F.interpolate(template[None, None], scale_factor=1.5, mode="bilinear")[0, 0]
    return {
        "as cut out": template,
        "occluded": occluded,
        "scaled x1.5": scaled.clamp(0, 1),  # ASCII: PIL's default font has no ×
        "rotated 90 deg": torch.rot90(template, 1),
    }


def match_all(template: torch.Tensor, others: torch.Tensor, seed: int = 0) -> list[dict]:
    """For each case: its scene, NCC map, best location, and whether it found the target."""
    results = []
    truth = (2 * CELL, 2 * CELL)  # the window centred on the centre cell
    for name, target in failure_cases(template).items():
        scene = make_scene(target, others, torch.Generator().manual_seed(seed))
        scores = ncc_map(scene, template)
        best = divmod(int(scores.argmax()), scores.shape[1])  # (row, column) of the window
        found = max(abs(best[0] - truth[0]), abs(best[1] - truth[1])) <= 4
        # fmt: off
        results.append({"case": name, "scene": scene, "ncc": scores, "best": best, "found": found,
                        "peak": scores.max().item(), "at_target": scores[truth].item()})
        # fmt: on
    return results


def matching_picture(results: list[dict], scale: int = 2) -> Image.Image:
    """One column per case: the scene with boxes (red: best match; green: the target), the NCC
    map below it (white = 1, black = −1), and a caption."""
    size = 5 * CELL * scale
    picture = Image.new("RGB", (len(results) * (size + 10) + 10, 2 * size + 70), "white")
    draw = ImageDraw.Draw(picture)
    for index, result in enumerate(results):
        left = 10 + index * (size + 10)
        scene = Image.fromarray((result["scene"] * 255).byte().numpy()).convert("RGB")
        picture.paste(scene.resize((size, size), Image.NEAREST), (left, 40))
        for (row, column), colour in ((2 * CELL, 2 * CELL), "lime"), (result["best"], "red"):
            box = (column * scale, row * scale, (column + CELL) * scale, (row + CELL) * scale)
            draw.rectangle(
                [left + box[0], 40 + box[1], left + box[2], 40 + box[3]], outline=colour, width=2
            )
        ncc = ((result["ncc"] + 1) / 2 * 255).byte().numpy()
        offset = CELL // 2 * scale  # a window's score sits at its centre
        picture.paste(
            Image.fromarray(ncc).resize((size - 2 * offset,) * 2),
            (left + offset, 50 + size + offset),
        )
        verdict = "found" if result["found"] else "missed"
        caption = f"{result['case']}: peak {result['peak']:.2f}, {verdict}"
        draw.text(
            (left, 4), f"{caption}\nNCC at the target {result['at_target']:.2f}", fill="black"
        )
    return picture


def nearest(queries: torch.Tensor, images: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (Q, k) of the k training images nearest each query in pixel (L2) distance."""
    distances = NearestNeighbor(metric="l2").distances(queries.flatten(1), images.flatten(1))
    return distances.topk(k, dim=1, largest=False).indices


def drawn_digit() -> torch.Tensor:
    """A 7 drawn with a thin pen, as a user might draw one: smaller strokes than MNIST's."""
    canvas = Image.new("L", (CELL, CELL), 0)
    ImageDraw.Draw(canvas).line([(8, 7), (20, 7), (12, 22)], fill=255, width=1)
    return torch.from_numpy(np.asarray(canvas).copy()).float() / 255


def retrieval_queries(test_images: torch.Tensor, test_labels: torch.Tensor) -> list[Query]:
    """(caption, image, true label): three test digits, the first shifted, the first inverted
    (dark ink on white paper, as a photo of a drawing comes), and a drawn 7."""
    labels = [int(label) for label in test_labels[:3]]
    queries = [(f"test digit {labels[i]}", test_images[i], labels[i]) for i in range(3)]
    shifted = torch.roll(test_images[0], shifts=6, dims=1)  # MNIST's border is empty: no wrap
    queries.append((f"{int(test_labels[0])} shifted 6 px", shifted, int(test_labels[0])))
    queries.append((f"{int(test_labels[0])} inverted", 1 - test_images[0], int(test_labels[0])))
    queries.append(("drawn 7, thin pen", drawn_digit(), 7))
    return queries


def retrieval_picture(
    queries: list[Query], images: torch.Tensor, labels: torch.Tensor, k: int = 8
) -> tuple[Image.Image, list[int]]:
    """One row per query: the query, then its k nearest training images with their labels.
    Also returns, per query, how many of the k share its true label."""
    found = nearest(torch.stack([image for _, image, _ in queries]), images, k)
    tile, gap = 2 * CELL, 26
    picture = Image.new("RGB", (150 + k * (tile + 6), len(queries) * (tile + gap) + 10), "white")
    draw = ImageDraw.Draw(picture)
    correct = []
    for row, ((caption, query, label), indices) in enumerate(zip(queries, found)):
        top = 10 + row * (tile + gap)
        draw.text((4, top + tile + 2), caption, fill="black")
        for column, image in enumerate([query, *images[indices]]):
            left = 4 if column == 0 else 150 + (column - 1) * (tile + 6)
            picture.paste(
                Image.fromarray((image * 255).byte().numpy()).resize((tile, tile)), (left, top)
            )
        neighbour_labels = labels[indices].tolist()
        correct.append(sum(n == label for n in neighbour_labels))
        for column, neighbour in enumerate(neighbour_labels):
            colour = "green" if neighbour == label else "red"
            draw.text(
                (150 + column * (tile + 6) + tile // 2 - 3, top + tile + 2),
                str(neighbour),
                fill=colour,
            )
    return picture, correct


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DLCOURSE_DATA_DIR", "data"))
    parser.add_argument("--out", type=Path, default=Path("."))
    arguments = parser.parse_args(argv)
    root = Path(arguments.data_dir)
    train, test = (read_split(root, train=flag, spec=DIGITS) for flag in (True, False))
    train_images, test_images = train.data.float() / 255, test.data.float() / 255
    results = match_all(test_images[0], test_images[1:9])
    with open_new(arguments.out / "template_matching.png") as file:
        matching_picture(results).save(file, format="PNG")
    for result in results:
        verdict = "found" if result["found"] else "missed"
        print(
            f"{result['case']:>14}: NCC peak {result['peak']:.3f} at {result['best']}, "
            f"at the target {result['at_target']:.3f}: {verdict}"
        )
    queries = retrieval_queries(test_images, test.targets)
    picture, correct = retrieval_picture(queries, train_images, train.targets)
    with open_new(arguments.out / "retrieval.png") as file:
        picture.save(file, format="PNG")
    for (caption, _, _), count in zip(queries, correct):
        print(f"{caption:>18}: {count} of 8 nearest training images share its label")
    print(f"pictures: {arguments.out / 'template_matching.png'}, {arguments.out / 'retrieval.png'}")


if __name__ == "__main__":
    main()
