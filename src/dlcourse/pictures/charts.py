"""Charts: the confusion matrix, training curves, the learning-rate finder's curve and the
decision boundary of 2-D points. Axes carry ticks and a grid; colours that mean something have
a legend."""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw

from dlcourse.pictures.drawing import LINE, font, from_pil, text_width, titled
from dlcourse.pictures.learned import evaluation_mode

# One colour per class (matplotlib's tab10), for decision boundaries.
PALETTE = torch.tensor(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]]
) / 255  # fmt: skip
TRAIN, VAL, MARK = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # blue, orange, green
GRID = (225, 225, 225)
GRID_DOTS = (160, 160, 160)


def confusion_matrix_image(
    counts: torch.Tensor, class_names: list[str], title: str
) -> torch.Tensor:
    """Rows: true class; columns: predicted class; each cell's count, shaded by its share of
    the row (the true class's images). `title` says which images were counted."""
    total, correct = int(counts.sum()), int(counts.diag().sum())
    fractions = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    cell = max(36, text_width(str(int(counts.max()))) + 10)
    headers = [vertical_text(name) for name in class_names]
    left = max(text_width("true class ↓"), *(text_width(name) for name in class_names)) + 14
    top = LINE + 4 + max(header.height for header in headers)
    size = len(class_names) * cell
    picture = Image.new("RGB", (left + size + 8, top + size + 8), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((left, 2), "predicted class →", fill="black", font=font())
    draw.text((4, top - LINE), "true class ↓", fill="black", font=font())
    for index, (name, header) in enumerate(zip(class_names, headers)):
        picture.paste(header, (left + index * cell + (cell - header.width) // 2, LINE + 4))
        draw.text((6, top + index * cell + (cell - LINE) // 2), name, fill="black", font=font())
    for (true, predicted), fraction in zip(
        ((t, p) for t in range(len(counts)) for p in range(len(counts))), fractions.flatten()
    ):
        shade = int(255 * (1 - fraction.item()))
        box = (left + predicted * cell, top + true * cell)
        draw.rectangle((*box, box[0] + cell, box[1] + cell), fill=(shade, shade, 255), outline=GRID)
        count = str(int(counts[true, predicted]))
        position = (box[0] + (cell - text_width(count)) // 2, box[1] + (cell - LINE) // 2 + 2)
        draw.text(position, count, fill="black" if shade > 120 else "white", font=font())
    note = "each cell: images; darker: a larger share of the true class's images"
    heading = f"{title}: {total:,} images, {correct:,} correct ({correct / max(total, 1):.2%})"
    return titled(picture, heading, note)


def vertical_text(text: str) -> Image.Image:
    """`text` read bottom to top: column headers that fit a narrow column whatever their length."""
    label = Image.new("RGB", (text_width(text) + 4, LINE), "white")
    ImageDraw.Draw(label).text((2, 1), text, fill="black", font=font())
    return label.rotate(90, expand=True) if len(text) > 2 else label


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    step = 10 ** math.floor(math.log10((high - low) / count))
    step *= next(m for m in (1, 2, 5, 10) if (high - low) / (step * m) <= count)
    first = math.ceil(low / step - 1e-9)
    return [tick * step for tick in range(first, math.floor(high / step + 1e-9) + 1)]


def tick_label(value: float, ticks: list[float]) -> str:
    """Enough decimals that neighbouring ticks differ (never `1.39 / 1.39`)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(value) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


class Axes:
    """A plot's frame on a PIL image: data coordinates → pixels, ticks, grid, lines, marks."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int],
                 x_range: tuple[float, float], y_range: tuple[float, float],
                 log_x: bool = False) -> None:  # fmt: skip
        self.draw, self.box, self.log_x = draw, box, log_x
        x_low, x_high = (math.log10(x) for x in x_range) if log_x else x_range
        margin = (x_high - x_low) * 0.03  # the first and last points clear of the frame
        self.x_range = (x_low - margin, x_high + margin)
        low, high = y_range
        pad = (high - low) * 0.05 or max(abs(low) * 0.05, 0.01)  # one value: a band around it
        self.y_range = (low - pad, high + pad)

    def point(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        x = math.log10(x) if self.log_x else x
        (x_low, x_high), (y_low, y_high) = self.x_range, self.y_range
        across = 0.5 if x_high == x_low else (x - x_low) / (x_high - x_low)
        return left + (right - left) * across, bottom - (bottom - top) * (y - y_low) / (
            y_high - y_low
        )

    def frame(self, x_ticks: list[tuple[float, str]], x_label: str) -> None:
        """The grid at each tick, the frame, the tick labels and the x axis's name."""
        left, top, right, bottom = self.box
        y_ticks = nice_ticks(*self.y_range)
        for value in y_ticks:
            y = self.point(10 ** self.x_range[0] if self.log_x else self.x_range[0], value)[1]
            self.draw.line((left, y, right, y), fill=GRID)
            label = tick_label(value, y_ticks)
            self.draw.text(
                (left - text_width(label) - 4, y - LINE // 2), label, fill="black", font=font()
            )
        for value, label in x_ticks:
            x = self.point(value, self.y_range[0])[0]
            self.draw.line((x, top, x, bottom), fill=GRID)
            self.draw.text(
                (x - text_width(label) // 2, bottom + 3), label, fill="black", font=font()
            )
        self.draw.rectangle(self.box, outline="black")
        self.draw.text(((left + right - text_width(x_label)) // 2, bottom + LINE + 2), x_label,
                       fill="black", font=font())  # fmt: skip

    def line(self, points: list[tuple[float, float]], colour: tuple[int, int, int]) -> None:
        pixels = [self.point(x, y) for x, y in points]
        if len(pixels) > 1:
            self.draw.line(pixels, fill=colour, width=2)
        for x, y in pixels:
            self.draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)

    def vertical(self, x: float, colour: tuple[int, int, int], label: str) -> None:
        """A dashed line at `x`, labelled at the top of the plot."""
        _, top, right, bottom = self.box
        pixel = self.point(x, self.y_range[0])[0]
        for y in range(top, bottom, 8):
            self.draw.line((pixel, y, pixel, min(y + 4, bottom)), fill=colour, width=2)
        left = min(pixel + 4, right - text_width(label) - 4)
        self.draw.text((left, top + 3), label, fill=colour, font=font())


def legend(
    draw: ImageDraw.ImageDraw, position: tuple[int, int], items: list[tuple[str, tuple]]
) -> None:
    """Coloured line samples, each followed by what it means, on one line."""
    x, y = position
    for label, colour in items:
        draw.line((x, y + LINE // 2, x + 18, y + LINE // 2), fill=colour, width=3)
        draw.text((x + 22, y), label, fill="black", font=font())
        x += 22 + text_width(label) + 14


def curves_image(
    history: list[dict[str, float]], names: list[str], best_epoch: int | None = None
) -> torch.Tensor:
    """One panel per metric name (`loss`, `acc`, ...): its train/ and val/ values against the
    epoch, and the best epoch (the one whose weights were tested) marked."""
    panels = [curve_panel(history, name, best_epoch) for name in names]
    canvas = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "white")
    for index, panel in enumerate(panels):
        canvas.paste(panel, (index * panel.width, 0))
    return from_pil(canvas)


def curve_panel(history: list[dict[str, float]], name: str, best_epoch: int | None,
                width: int = 420, height: int = 320) -> Image.Image:  # fmt: skip
    panel = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(panel)
    draw.text((8, 4), f"{name} by epoch", fill="black", font=font())
    items = [("train", TRAIN), ("val", VAL)] + ([("best epoch", MARK)] if best_epoch else [])
    legend(draw, (8, 4 + LINE), items)
    series = {
        split: [
            (row["epoch"], row[f"{split}/{name}"]) for row in history if f"{split}/{name}" in row
        ]
        for split in ("train", "val")
    }
    values = [value for points in series.values() for _, value in points]
    if not values:
        return panel
    epochs = [row["epoch"] for row in history]
    box = (64, 12 + 2 * LINE, width - 14, height - 2 * LINE - 8)  # room for the tick labels
    axes = Axes(draw, box, (min(epochs), max(epochs)), (min(values), max(values)))
    every = max(1, math.ceil(len(epochs) / 8))
    axes.frame([(e, str(e)) for e in epochs[::every]], "epoch")
    for split, colour in (("train", TRAIN), ("val", VAL)):
        axes.line(series[split], colour)
    if best_epoch:
        axes.vertical(best_epoch, MARK, f"best {best_epoch}")
    return panel


def learning_rate_image(
    rates: list[float],
    losses: list[float],
    smoothed: list[float],
    suggestion: float | None,
    rule: str,
) -> torch.Tensor:
    """The learning-rate finder's loss against the rate (log scale): each step's loss as a dot,
    the smoothed loss as a line, and the suggested rate marked."""
    picture = Image.new("RGB", (640, 400), "white")
    draw = ImageDraw.Draw(picture)
    items = [("loss at each step", GRID_DOTS), ("smoothed", TRAIN)]
    legend(draw, (8, 4), items + ([("suggestion", MARK)] if suggestion else []))
    shown = [v for v in smoothed if math.isfinite(v)]
    low = min(shown + [v for v in losses if math.isfinite(v)])
    high = min(max(shown), 4 * min(shown))  # the blow-up runs off the chart
    axes = Axes(draw, (64, 12 + LINE, 626, 400 - 2 * LINE - 8), (rates[0], rates[-1]), (low, high),
                log_x=True)  # fmt: skip
    decades = range(math.ceil(math.log10(rates[0])), math.floor(math.log10(rates[-1])) + 1)
    axes.frame([(10.0**d, f"1e{d}") for d in decades], "learning rate (log scale)")
    for rate, loss in zip(rates, losses):
        if math.isfinite(loss) and low <= loss <= high:
            x, y = axes.point(rate, loss)
            draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=GRID_DOTS)
    axes.line([(r, v) for r, v in zip(rates, smoothed) if math.isfinite(v) and v <= high], TRAIN)
    if suggestion:
        axes.vertical(suggestion, MARK, f"{suggestion:.2g}")
    title = "learning-rate finder: loss of fresh weights as the rate grows each step"
    note = (
        f"suggested: lr={suggestion:.3g} (fastai's valley rule)" if suggestion else "no suggestion"
    )
    return titled(picture, title, note)


@torch.no_grad()
def decision_boundary(
    model: torch.nn.Module, points: torch.Tensor, labels: torch.Tensor, size: int = 256
) -> torch.Tensor:
    """The plane around 2-D `points` coloured pale by the class the model predicts there, and the
    points on top in their true class's colour: a point on the wrong colour is a mistake."""
    low, high = points.min(dim=0).values, points.max(dim=0).values
    margin = 0.1 * (high - low)
    low, high = low - margin, high + margin
    xs = torch.linspace(low[0].item(), high[0].item(), size, device=points.device)
    ys = torch.linspace(high[1].item(), low[1].item(), size, device=points.device)  # y up
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (size, size) each
    plane = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)  # (size², 2)
    with evaluation_mode(model):
        predicted = model(plane.to(points.dtype)).argmax(dim=1).reshape(size, size).cpu()
    image = 0.35 * PALETTE[predicted % len(PALETTE)] + 0.65  # (size, size, 3), pale
    scaled = (points.float().cpu() - low.cpu()) / (high - low).cpu() * (size - 1)
    rows, columns = (size - 1 - scaled[:, 1]).round().long(), scaled[:, 0].round().long()
    colours = 0.8 * PALETTE[labels.cpu() % len(PALETTE)]  # (N, 3), darker than the regions
    for row_offset in (-1, 0, 1):  # each point a 3×3 dot
        for column_offset in (-1, 0, 1):
            row = (rows + row_offset).clamp(0, size - 1)
            column = (columns + column_offset).clamp(0, size - 1)
            image[row, column] = colours
    return image.permute(2, 0, 1)  # (3, size, size)
