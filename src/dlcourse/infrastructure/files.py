"""Every file dlcourse writes goes through here: created new, never through a symbolic link.

A run or sweep folder handed to you (a student's submission, a colleague's sweep) may hold
links planted to make a command write elsewhere (`report.md -> ~/.bashrc`). So a file is
written to a new temporary file beside its place (`O_EXCL | O_NOFOLLOW`: never an existing
file, never through a link) and renamed into place, which replaces a directory entry and never
follows one; a link already at the place, or a linked folder between `root` (a folder dlcourse
owns, such as the run's) and the file, is refused in one line naming it. A folder the user
named is the user's: links above `root`, and `root` itself, are theirs to choose.

    write_file(run_dir / "metrics.json", text, root=run_dir)
    with open_new(path, root=run_dir) as file:   # for writers that take a file object
        torch.save(checkpoint, file)
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dlcourse.infrastructure.errors import UserError

if TYPE_CHECKING:  # the readers of runs (dlcourse-runs) need neither
    import torch
    from PIL import Image

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class LinkRefused(UserError):
    """A symbolic link where dlcourse would write: it never writes through one."""


def refuse_link(path: Path) -> None:
    """One line naming `path` and where it points, when `path` is a symbolic link."""
    if path.is_symlink():
        raise LinkRefused(
            f"refused to write {path}: it is a symbolic link (to {os.readlink(path)}), and "
            f"dlcourse never writes through one. Remove the link, or use a folder of your own"
        )


def refuse_links_between(path: Path, root: Path | None) -> None:
    """`path`, and every folder between it and `root` (`root` excluded) when `root` holds it,
    must not be links."""
    path = Path(os.path.abspath(path))
    refuse_link(path)
    if root is None or Path(os.path.abspath(root)) not in path.parents:
        return
    root = Path(os.path.abspath(root))
    for parent in path.parents:
        if parent == root:
            return
        refuse_link(parent)


def links_inside(folder: Path) -> list[Path]:
    """Every symbolic link inside `folder`'s tree (links to folders are not followed)."""
    found = []
    for place, folders, files in os.walk(folder):
        for name in [*folders, *files]:
            if os.path.islink(os.path.join(place, name)):
                found.append(Path(place) / name)
    return sorted(found)


def refuse_links_inside(folder: Path, what: str) -> None:
    """A folder dlcourse is about to write into holds only what dlcourse wrote: no links."""
    links = links_inside(folder)
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise LinkRefused(
            f"refused to write into {what} {folder}: {links[0]} is a symbolic link (to "
            f"{os.readlink(links[0])}){more}, and dlcourse never writes through one. Remove the "
            f"link(s), or copy the folder without them (cp -rL)"
        )


def make_folder(path: Path, root: Path | None = None) -> None:
    """`path` and its missing parents, with no link on the way below `root`."""
    path = Path(path)
    refuse_links_between(path, root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise_for(error, path)


@contextlib.contextmanager
def open_new(path: str | Path, root: str | Path | None = None, text: bool = False) -> Iterator[IO]:
    """A new temporary file beside `path`, renamed over `path` once the block has written it
    (flushed to disk first: a crash leaves the old file or the new one, never half of one)."""
    path = Path(path)
    make_folder(path.parent, Path(root) if root is not None else None)
    refuse_links_between(path, Path(root) if root is not None else None)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise_for(error, path)
    try:
        os.fchmod(descriptor, 0o666 & ~current_umask())
        with os.fdopen(descriptor, "w" if text else "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        refuse_link(path)  # planted while the file was written
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise_for(error, path)
        raise


def write_file(path: str | Path, data: str | bytes, root: str | Path | None = None) -> None:
    """Write `data` as the new contents of `path` (see `open_new`)."""
    with open_new(path, root, text=isinstance(data, str)) as file:
        file.write(data)


def raise_for(error: OSError, path: Path) -> None:
    """A full disk stays an OSError (the commands report it in one line, status 1); anything else
    (no permission, a read-only folder, a file in the way) becomes one line naming `path`."""
    if error.errno in FULL_DISK:
        raise error
    raise UserError(
        f"cannot write {path}: {error.strerror or error}. Choose a place you can write to"
    ) from None


@functools.cache
def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Picture:
    """A picture (3, H, W) in [0, 1] and its PNG, encoded once however many places it goes
    (TensorBoard's event file, a .png in the run folder)."""

    def __init__(self, image: torch.Tensor) -> None:
        self.image = image
        self.height, self.width = image.shape[-2:]
        self._png: bytes | None = None

    @property
    def png(self) -> bytes:
        if self._png is None:
            file = io.BytesIO()
            # zlib's fastest level: half the time of PIL's default (6), files ~5 % larger.
            to_pil(self.image).save(file, format="PNG", compress_level=1)
            self._png = file.getvalue()
        return self._png


def as_picture(image: torch.Tensor | Picture) -> Picture:
    return image if isinstance(image, Picture) else Picture(image)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] → a PIL image (for a PNG file, or to draw on)."""
    import numpy as np
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


# Reading files you did not write: small, regular, and never trusted.

# A run's records are kilobytes: a larger file is no record, and reading a device or a FIFO
# planted in their place (/dev/zero, a pipe) would fill memory or wait for ever.
SMALL_FILE = 16 * 2**20


def read_small(path: Path, limit: int = SMALL_FILE) -> str:
    """The UTF-8 text of a small regular file; OSError for anything else (ValueError: not
    UTF-8)."""
    if not path.is_file():
        raise OSError(errno.EINVAL, "not a regular file" if path.exists() else "no such file")
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // 2**20} MB, which no record is")
    return data.decode("utf-8")


def read_tail(path: Path, size: int = 2**20) -> str:
    """The last `size` bytes of a regular file (a log's end), undecodable bytes replaced."""
    if not path.is_file():
        raise OSError(errno.EINVAL, "not a regular file")
    with open(path, "rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - size))
        return file.read().decode("utf-8", errors="replace")


def as_number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (true/false, text, lists, and integers
    beyond a float's range, which no metric reaches)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def read_json(path: Path) -> tuple[dict | None, str | None]:
    """A JSON object from a file, or None and why not (a job killed mid-write leaves half one)."""
    try:  # ValueError: not JSON, or not UTF-8; RecursionError: nested thousands deep
        value = json.loads(read_small(path))
    except (OSError, ValueError, RecursionError) as error:
        return None, f"{path.name} could not be read ({type(error).__name__}: {str(error)[:80]})"
    return (value, None) if isinstance(value, dict) else (None, f"{path.name} holds no JSON object")
