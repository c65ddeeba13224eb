"""Use a trained checkpoint on your own images.

    dlcourse-predict outputs/runs/<run>/checkpoints/best.pt digit.png [more.png ...] [--top-k 3] [--json]
    dlcourse-predict <inpainting checkpoint> photo.png --mask holes.png [--output filled.png]
    dlcourse-predict <inpainting checkpoint> photo.png --box 8,8,12,12   # top,left,height,width

A classifier prints its top-k classes with softmax probabilities; an inpainting model writes the
filled image as a PNG. Which one runs is read from the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dlcourse.checkpoint import load_checkpoint
from dlcourse.config import build
from dlcourse.data.image_folder import read_image
from dlcourse.data.mnist import MEAN, STD
from dlcourse.errors import UserError, exit_on_user_error


def load_model(checkpoint_path: str | Path) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's model, built from its own config, with its weights, in eval mode."""
    from omegaconf import OmegaConf

    checkpoint = load_checkpoint(checkpoint_path)
    model = build(OmegaConf.create(checkpoint["config"]), "model")
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def read_digit(path: Path, size: int = 28) -> torch.Tensor:
    """Any image → an MNIST-like (1, 28, 28) input: grayscale, light digit on dark, the digit
    fitted into 20×20 and centred, then normalised as in training."""
    image = read_image(checked(path), "L", None)
    if image.mean() > 0.5:  # a dark digit on light paper: MNIST has it the other way round
        image = 1 - image
    rows, columns = torch.nonzero(image[0] > 0.2, as_tuple=True)
    if len(rows):  # crop to the ink, keeping a square box around it
        image = image[:, rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    side = max(image.shape[1:])
    square = torch.zeros(1, side, side)
    top, left = (side - image.shape[1]) // 2, (side - image.shape[2]) // 2
    square[:, top : top + image.shape[1], left : left + image.shape[2]] = image
    digit = torch.nn.functional.interpolate(square[None], size=(20, 20), mode="bilinear", antialias=True)[0]
    canvas = torch.zeros(1, size, size)
    canvas[:, 4:24, 4:24] = digit
    return (canvas - MEAN) / STD


def checked(path: Path) -> Path:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises several types for unreadable files
        raise UserError(f"cannot read image {path}: {error}") from None
    return path


@torch.no_grad()
def classify(model: torch.nn.Module, paths: list[Path], top_k: int) -> list[dict]:
    results = []
    for path in paths:
        probabilities = model(read_digit(path)[None]).softmax(dim=1)[0]  # (num_classes,)
        values, classes = probabilities.topk(min(top_k, len(probabilities)))
        results.append({"image": str(path), "top": [{"class": c, "probability": round(v, 6)}
                                                    for c, v in zip(classes.tolist(), values.tolist())]})
    return results


def hole_mask(args: argparse.Namespace, height: int, width: int) -> torch.Tensor:
    """(1, H, W): 1 in the hole, from a mask image (white = hole) or a box."""
    if args.mask:
        return (read_image(checked(Path(args.mask)), "L", height, resample="nearest") > 0.5).float()
    try:
        top, left, box_height, box_width = (int(v) for v in args.box.split(","))
    except (AttributeError, ValueError):
        raise UserError("an inpainting checkpoint needs --mask MASK.png or --box TOP,LEFT,HEIGHT,WIDTH") from None
    mask = torch.zeros(1, height, width)
    mask[:, top : top + box_height, left : left + box_width] = 1
    return mask


@torch.no_grad()
def inpaint(model: torch.nn.Module, checkpoint: dict, args: argparse.Namespace) -> Path:
    """Fill the hole of one image and write it (kept pixels unchanged) as a PNG; return its path."""
    from torchvision.utils import save_image

    if len(args.images) != 1:
        raise UserError("an inpainting checkpoint fills one image at a time")
    channels, height, width = checkpoint["input_shape"]
    image = read_image(checked(Path(args.images[0])), "L" if channels == 1 else "RGB", height)
    mask = hole_mask(args, height, width)
    fill_value = checkpoint["config"]["dataset"].get("fill_value", 0.0)
    masked = torch.lerp(image, torch.full_like(image, fill_value), mask)
    prediction = model(masked[None], mask[None])[0].clamp(0, 1)
    output = Path(args.output or Path(args.images[0]).with_suffix("").as_posix() + "_filled.png")
    save_image(torch.where(mask.bool(), prediction, image), output)
    return output


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlcourse-predict", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoints/*.pt file written by dlcourse-train")
    parser.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show (classification)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text (classification)")
    parser.add_argument("--mask", help="mask image, white = hole (inpainting)")
    parser.add_argument("--box", help="hole as TOP,LEFT,HEIGHT,WIDTH in pixels (inpainting)")
    parser.add_argument("--output", help="where to write the filled PNG (inpainting)")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    model, checkpoint = load_model(args.checkpoint)
    task = checkpoint.get("task", "classification")
    if task == "inpainting":
        print(f"Wrote {inpaint(model, checkpoint, args)}")
    elif args.mask or args.box:
        raise UserError(f"{args.checkpoint} is a {task} checkpoint: --mask and --box are for inpainting ones")
    else:
        results = classify(model, [Path(p) for p in args.images], args.top_k)
        if args.json:
            print(json.dumps(results, indent=2))
        for result in results if not args.json else []:
            ranked = ", ".join(f"{t['class']} ({t['probability']:.1%})" for t in result["top"])
            print(f"{result['image']}: {ranked}")


if __name__ == "__main__":
    sys.exit(main())
