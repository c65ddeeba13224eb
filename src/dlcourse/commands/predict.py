"""Use a trained checkpoint on your own images.

    dlcourse-predict outputs/runs/<run> digit.png [more.png ...] [--top-k 3] [--json]   # the run's
    best.pt
    dlcourse-predict <inpainting checkpoint> photo.png --mask holes.png [--output filled.png]
    dlcourse-predict <inpainting checkpoint> photo.png --box 8,8,12,12   # top,left,height,width

A classifier prints its top-k classes with softmax probabilities; an inpainting model writes the
filled image (its size and colours kept) as a PNG. Which one runs is read from the checkpoint.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

from dlcourse.data.image_decoding import read_image
from dlcourse.data.new_images import MNIST_PREPROCESSING, checked, prepare_input, regular_file
from dlcourse.infrastructure.checkpoint import Preprocessing, model_from_checkpoint, open_checkpoint
from dlcourse.infrastructure.errors import UserError, exit_on_user_error, printable
from dlcourse.infrastructure.files import open_new, refuse_link
from dlcourse.infrastructure.run_folder import BEST


def load_model(
    checkpoint_path: str | Path, config_dirs: list[Path] | None = None
) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's model (a file, or a run folder's best.pt), built from its own checked
    config (your `config_dirs` trusted: --config-dir), with its weights, in eval mode."""
    path, checkpoint, cfg = open_checkpoint(checkpoint_path, BEST, config_dirs or [])
    return model_from_checkpoint(checkpoint, cfg, path).eval(), checkpoint


@torch.no_grad()
def classify(
    model: torch.nn.Module,
    paths: list[Path],
    top_k: int,
    save_input: bool = False,
    checkpoint: dict | None = None,
    output: str | None = None,
) -> list[dict]:
    """Each image's top-k classes, by number and name; a warning for an image with nothing in
    it. How an image becomes an input, and the class names, come from the checkpoint."""
    preprocessing = (checkpoint or {}).get("preprocessing") or MNIST_PREPROCESSING
    if preprocessing.get("kind") == Preprocessing.POINTS:
        raise UserError(
            "this checkpoint classifies 2-D points (dataset=spirals or xor), not images: look at "
            "its run folder's decision_boundary.png, or measure it with dlcourse-eval"
        )
    class_names = (checkpoint or {}).get("class_names") or []
    for path in paths:  # a FIFO or folder among them: refused before any image is classified
        regular_file(path)
    copies = input_copies(paths, output) if save_input else []
    results = []
    for index, path in enumerate(paths):
        image, found = prepare_input(path, preprocessing)
        if save_input:  # what the model received, as an image
            save_input_png(image, preprocessing, copies[index])
        try:
            probabilities = model(image[None]).softmax(dim=1)[0]  # (num_classes,)
        except (RuntimeError, ValueError, IndexError) as error:
            shape = "×".join(str(n) for n in image.shape)
            raise UserError(
                f"this model cannot classify {shape} images ({str(error).splitlines()[0][:120]})"
            ) from None
        result = {"image": str(path), "top": top_classes(probabilities, top_k, class_names)}
        if not found:
            result["warning"] = (
                "nothing found (a blank or uniform image): the prediction means nothing"
            )
        results.append(result)
    return results


def top_classes(probabilities: torch.Tensor, top_k: int, class_names: list[str]) -> list[dict]:
    """The `top_k` most probable classes, by number and name, most probable first."""
    values, classes = probabilities.topk(min(top_k, len(probabilities)))
    return [
        {"class": c, "name": class_names[c] if c < len(class_names) else str(c),
         "probability": round(v, 6)}
        for c, v in zip(classes.tolist(), values.tolist())
    ]  # fmt: skip


def input_copies(paths: list[Path], output: str | None) -> list[Path]:
    """Where --save-input writes what the model received: <image>_input.png beside each image,
    checked before any work. It never replaces a file this call did not write (one the user
    named with --output aside), nor writes two images to one name."""
    copies = [path.with_name(f"{path.stem}_input.png") for path in paths]
    for index, copy in enumerate(copies):
        if copy in copies[:index]:
            first = paths[copies.index(copy)]
            raise UserError(
                f"--save-input would write {copy} for both {first} and {paths[index]}; rename one"
            )
        named = output is not None and os.path.abspath(output) == os.path.abspath(copy)
        if (copy.exists() or copy.is_symlink()) and not named:
            raise UserError(
                f"--save-input would replace {copy}, which this command did not write; move or "
                "rename it first"
            )
        check_writable(copy, "--save-input")
    return copies


def save_input_png(image: torch.Tensor, preprocessing: dict, path: Path) -> None:
    """A model's input (C, H, W), normalisation undone, as a grayscale or RGB PNG."""
    mean, std = (torch.tensor(preprocessing[k]).view(-1, 1, 1) for k in ("mean", "std"))
    write_image(image * std + mean, path, "PNG")


def write_image(image: torch.Tensor, path: Path, image_format: str) -> None:
    """An image (C, H, W) in [0, 1] as an 8-bit grayscale or RGB file, written as every file
    dlcourse writes (dlcourse.infrastructure.files: a new file renamed into place, never
    through a link)."""
    from PIL import Image

    pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    with open_new(path) as file:
        picture.save(file, format=image_format)


def check_writable(path: Path, flag: str) -> None:
    """Refuse, before any work, a place this user cannot write (a read-only folder or disk):
    tried with a temporary file, which also answers for root and for read-only mounts."""
    refuse_link(path)
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise UserError(
            f"{flag} {path}: cannot write into {path.parent} ({error.strerror or error}); choose "
            "a folder you can write to"
        ) from None


def hole_mask(args: argparse.Namespace, height: int, width: int) -> torch.Tensor:
    """(1, H, W): 1 in the hole, from a mask image (white = hole) or a box, at the image's size."""
    if args.mask:
        return (
            read_image(checked(Path(args.mask)), "L", (height, width), resample="nearest") > 0.5
        ).float()
    try:
        top, left, box_height, box_width = (int(v) for v in args.box.split(","))
    except (AttributeError, ValueError):
        raise UserError(
            "an inpainting checkpoint needs --mask MASK.png or --box TOP,LEFT,HEIGHT,WIDTH"
        ) from None
    if not (
        top >= 0
        and left >= 0
        and box_height >= 1
        and box_width >= 1
        and top + box_height <= height
        and left + box_width <= width
    ):
        raise UserError(
            f"--box {args.box} is not inside the {height}×{width} image: TOP,LEFT ≥ 0, "
            f"HEIGHT,WIDTH ≥ 1, TOP+HEIGHT ≤ {height} and LEFT+WIDTH ≤ {width}"
        )
    mask = torch.zeros(1, height, width)
    mask[:, top : top + box_height, left : left + box_width] = 1
    return mask


@torch.no_grad()
def inpaint(model: torch.nn.Module, checkpoint: dict, args: argparse.Namespace) -> Path:
    """Fill the hole of one image and write it as a PNG (its size and colours kept); return its
    path."""
    if len(args.images) != 1:
        raise UserError("an inpainting checkpoint fills one image at a time")
    path = checked(Path(args.images[0]))
    mode = "RGB" if has_colour(path) else "L"
    output, image_format = output_path(args, mode)
    image = read_image(path, mode, None)  # (C, H, W)
    mask = hole_mask(args, *image.shape[1:])  # (1, H, W) at the image's own size
    fill_value = checkpoint["config"]["dataset"].get("fill_value", 0.0)
    prediction = fill_hole(model, image, mask, checkpoint["input_shape"], fill_value)
    write_image(torch.where(mask.bool(), prediction, image), output, image_format)
    return output


@torch.no_grad()
def fill_hole(
    model: torch.nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor,
    input_shape: list[int],
    fill: float,
) -> torch.Tensor:
    """The model's prediction for `image` (C, H, W), at the image's size: the model sees it
    resized to its input size, a grayscale model one colour channel at a time."""
    channels, height, width = input_shape
    resize = partial(torch.nn.functional.interpolate, mode="bilinear", antialias=True)
    small = resize(image[:, None], size=(height, width))  # (C, 1, h, w): one gray image a channel
    small_mask = (resize(mask[None], size=(height, width)) > 0.5).float()  # (1, 1, h, w)
    if channels == 3:  # an RGB model takes the channels together (a gray image three times)
        small = small.view(1, -1, height, width).expand(1, 3, height, width)  # (1, 3, h, w)
    masked = torch.lerp(small, torch.full_like(small, fill), small_mask)  # the holes filled
    try:
        prediction = model(
            masked, small_mask.expand(len(masked), -1, -1, -1)
        )  # (N, channels, h, w)
    except (RuntimeError, ValueError, TypeError) as error:
        reason = str(error).splitlines()[0][:120]
        raise UserError(
            f"this model cannot fill a {channels}×{height}×{width} image ({reason})"
        ) from None
    prediction = prediction.clamp(0, 1)[:, : image.shape[0]].reshape(
        image.shape[0], 1, height, width
    )
    return resize(prediction, size=image.shape[1:]).clamp(0, 1)[:, 0]  # (C, H, W)


def has_colour(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:  # "I", "I;16", "I;16B", ...: 16- and 32-bit grayscale
        return image.mode not in ("1", "L", "LA", "F") and not image.mode.startswith("I")


def output_path(args: argparse.Namespace, mode: str = "RGB") -> tuple[Path, str]:
    """Where the filled image goes (--output, or <image>_filled.png) and in which PIL format,
    checked before any work: a file PIL can write a `mode` image as, in a folder this user can
    write to. The derived name never replaces a file; one named with --output may."""
    from PIL import Image

    output = Path(args.output or Path(args.images[0]).with_suffix("").as_posix() + "_filled.png")
    if output.is_dir():
        raise UserError(
            f"--output {output} is a folder; name an image file, e.g. {output / 'filled.png'}"
        )
    image_format = Image.registered_extensions().get(output.suffix.lower())
    if image_format not in Image.SAVE:  # unknown, or a format PIL reads but cannot write
        raise UserError(
            f"--output {output}: name an image file (.png, .jpg, ...); PIL cannot write "
            f"{output.suffix or 'files without an extension'}"
        )
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: the folder {output.parent} does not exist")
    if not args.output and (output.exists() or output.is_symlink()):
        raise UserError(f"{output} already exists; name it with --output to replace it")
    try:  # some writers take only some modes (a 1×1 image costs nothing)
        Image.new(mode, (1, 1)).save(io.BytesIO(), format=image_format)
    except Exception as error:  # PIL raises several types for what a writer cannot do
        raise UserError(
            f"--output {output}: PIL cannot write a {mode} image as {image_format} ({error})"
        ) from None
    check_writable(output, "--output")
    return output, image_format


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlcourse-predict", description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint",
        help="a run folder (its best.pt) or a checkpoints/*.pt file written by dlcourse-train",
    )
    parser.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show (classification)")
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of text (classification)"
    )
    parser.add_argument("--mask", help="mask image, white = hole (inpainting)")
    parser.add_argument("--box", help="hole as TOP,LEFT,HEIGHT,WIDTH in pixels (inpainting)")
    parser.add_argument("--output", help="where to write the filled PNG (inpainting)")
    parser.add_argument(
        "--config-dir",
        action="append",
        type=Path,
        help="your own configs the run was trained with (dlcourse-train --config-dir): their "
        "components may be built",
    )
    parser.add_argument(
        "--save-input",
        action="store_true",
        help="also write <image>_input.png: the image the classifier received",
    )
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: show at least 1 class")
    model, checkpoint = load_model(args.checkpoint, args.config_dir)
    task = checkpoint.get("task", "classification")
    if task == "inpainting":
        print(f"Wrote {inpaint(model, checkpoint, args)}")
    elif args.mask or args.box:
        raise UserError(
            f"{args.checkpoint} is a {task} checkpoint: --mask and --box are for inpainting ones"
        )
    else:
        paths = [Path(p) for p in args.images]
        results = classify(model, paths, args.top_k, args.save_input, checkpoint, args.output)
        if args.json:  # JSON escapes control characters itself
            print(json.dumps(results, indent=2))
        for result in results if not args.json else []:
            ranked = ", ".join(
                f"{printable(t['name'])} ({t['probability']:.1%})" for t in result["top"]
            )  # class names come from the checkpoint (its folders' names): never escapes
            print(f"{printable(result['image'])}: {ranked}")
        for result in results:
            if "warning" in result:
                warning = f"warning: {printable(result['image'])}: {result['warning']}"
                print(warning, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
