"""Reading image collections: ImageFolder directories, tars of them, and image decoding.

Both directories and tars are reduced to a list of relative paths plus a function that
returns a file's bytes; :func:`layout` then decides which file belongs to which split and
class, the same way for both:

* ``<split>/<class>/<file>`` where the top-level folders are split names (train, test,
  val, ...): one split per folder;
* ``<class>/<file>``: a single split;
* a single wrapping folder around either is looked through.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "val", "valid", "validation", "testing")
_IGNORED = {".DS_Store", "Thumbs.db", "desktop.ini"}
#: Default of data.max_file_mb: no CIFAR-like image comes near it, and a file (or tar
#: member) declared larger is refused before a byte of it is read, so a decompression
#: bomb cannot exhaust memory.
MAX_FILE_MB = 64.0

#: split -> class -> list of relative file paths
Layout = dict[str, dict[str, list[str]]]


def is_hidden(parts: tuple[str, ...]) -> bool:
    """Whether a relative path (its parts) is hidden, macOS metadata or a desktop file to ignore."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] in _IGNORED


def layout(files: Iterable[str], dirs: Iterable[str], where: str) -> Layout:
    """Assign relative file paths to splits and classes.

    Args:
        files: Relative POSIX paths of regular files.
        dirs: Relative paths of directories (to find empty class folders).
        where: The source, for error messages.

    Returns:
        ``{split: {class: [paths]}}``; a single-split source uses the split name ``""``.

    Raises:
        DataError: If there are no files, loose files beside the class folders, or an
            empty class folder.
    """
    paths = [PurePosixPath(f).parts for f in files]
    paths = [p for p in paths if p and not is_hidden(p)]
    dir_parts = [PurePosixPath(d).parts for d in dirs]
    dir_parts = [p for p in dir_parts if p and not is_hidden(p)]
    if not paths:
        raise DataError(f"no files found in {where}")
    prefix: tuple[str, ...] = ()
    # Look through one wrapping folder (e.g. a tar of 'mydata/<class>/x.jpg').
    while True:
        heads = {p[len(prefix)] for p in paths}
        depth = min(len(p) - len(prefix) for p in paths)
        if len(heads) == 1 and depth >= 3 and next(iter(heads)).lower() not in TRAIN_NAMES + TEST_NAMES:
            prefix = prefix + (next(iter(heads)),)
        else:
            break
    rel = [p[len(prefix) :] for p in paths]
    heads = {p[0] for p in rel}
    split_mode = all(len(p) >= 3 for p in rel) and all(h.lower() in TRAIN_NAMES + TEST_NAMES for h in heads)
    out: Layout = {}
    for full, p in zip(paths, rel):
        if split_mode:
            split, cls = p[0].lower(), p[1]
        else:
            if len(p) < 2:
                raise DataError(
                    f"{where}: file {'/'.join(full)} is not inside a class folder "
                    "(expected <class>/<image> or <split>/<class>/<image>)"
                )
            split, cls = "", p[0]
        out.setdefault(split, {}).setdefault(cls, []).append("/".join(full))
    # Class folders that exist but hold no files are an error, not a silently missing class.
    for d in dir_parts:
        r = d[len(prefix) :] if d[: len(prefix)] == prefix else None
        if r is None:
            continue
        if split_mode and len(r) == 2 and r[0].lower() in out and r[1] not in out[r[0].lower()]:
            raise DataError(f"{where}: class folder {'/'.join(d)} is empty")
        if not split_mode and len(r) == 1 and r[0] not in out.get("", {}):
            raise DataError(f"{where}: class folder {'/'.join(d)} is empty")
    for split in out:
        for cls in out[split]:
            out[split][cls].sort()
    return out


def _name_problem(name: str) -> str | None:
    """Why a member name may not be used: absolute, or climbing out with '..' (None when fine)."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute name"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "has a '..' component (it points outside the archive's tree)"
    return None


def _size_problem(size: int, max_bytes: int | None) -> str | None:
    if max_bytes is not None and size > max_bytes:
        return f"is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:g} MB limit of one image (data.max_file_mb)"
    return None


def _refuse(rejected: list[tuple[str, str]], where: str, what: str, skip_invalid: bool) -> None:
    """Stop on the first unsafe entry, or (``skip_invalid``) warn once naming it and counting all."""
    if not rejected:
        return
    name, why = rejected[0]
    if not skip_invalid:
        raise DataError(
            f"{where}: {what} {name!r} {why}; only regular image files inside it are read "
            "(remove it, or set data.skip_invalid=true to skip such entries)"
        )
    more = f" and {len(rejected) - 1} more" if len(rejected) > 1 else ""
    plural = what if len(rejected) == 1 else ("entries" if what == "entry" else f"{what}s")
    warnings.warn(f"{where}: skipped {len(rejected)} {plural} not safe to read: {name!r} {why}{more}",
                  stacklevel=3)  # fmt: skip


def _bytes(max_file_mb: float | None) -> int | None:
    return None if max_file_mb is None else int(max_file_mb * 2**20)


def _folder_entry_problem(full: Path, root: Path, is_dir: bool, max_bytes: int | None) -> str | None:
    """Why a folder entry may not be read: a link leaving the folder or to a folder, a special file, a huge file."""
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        target = full.resolve()
        if root not in target.parents:
            return f"is a symbolic link to {target}, outside the data folder"
        if is_dir or target.is_dir():
            return "is a symbolic link to a folder (links to folders are not followed)"
        st = os.stat(full)
    if is_dir:
        return "is a folder named like an image" if Path(full.name).suffix.lower() in IMAGE_EXTENSIONS else None
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    return _size_problem(st.st_size, max_bytes)


def list_directory(
    root: Path, skip_invalid: bool = False, max_file_mb: float | None = MAX_FILE_MB
) -> tuple[list[str], list[str]]:
    """Relative file and directory paths under ``root`` (following no symlinked dirs).

    Hidden entries (dot files, ``__MACOSX``) are left out unread. Every other entry must
    be a regular file or folder inside ``root``: a symbolic link that leaves the folder
    or points at a folder, a FIFO, socket or device, a folder named like an image, or a
    file over ``max_file_mb`` stops with one line naming it (with ``skip_invalid``: is
    left out, with one warning that names the first and counts them).

    Raises:
        DataError: For the first unsafe entry, unless ``skip_invalid``.
    """
    files: list[str] = []
    dirs: list[str] = []
    rejected: list[tuple[str, str]] = []
    real_root = root.resolve()
    max_bytes = _bytes(max_file_mb)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        kept = []
        for d in sorted(dirnames):
            rel = (rel_dir / d).as_posix()
            if is_hidden(PurePosixPath(rel).parts):
                continue
            problem = _folder_entry_problem(Path(dirpath) / d, real_root, True, max_bytes)
            if problem:
                rejected.append((rel, problem))
            else:
                kept.append(d)
                dirs.append(rel)
        dirnames[:] = kept  # os.walk descends into these only
        for f in sorted(filenames):
            rel = (rel_dir / f).as_posix()
            if is_hidden(PurePosixPath(rel).parts):
                continue
            problem = _folder_entry_problem(Path(dirpath) / f, real_root, False, max_bytes)
            if problem:
                rejected.append((rel, problem))
            else:
                files.append(rel)
    _refuse(rejected, str(root), "entry", skip_invalid)
    return files, dirs


def _member_problem(member: tarfile.TarInfo, name: str, max_bytes: int | None) -> str | None:
    """Why a tar member may not be read (None for a regular file or folder inside the archive's tree)."""
    problem = _name_problem(member.name)
    if problem:
        return problem
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r}), not a regular file"
    if member.isdir():
        return "is a folder named like an image" if Path(name.rstrip("/")).suffix.lower() in IMAGE_EXTENSIONS else None
    if not member.isfile():
        return "is not a regular file (a device, FIFO or other special member)"
    return _size_problem(member.size, max_bytes)


def read_tar_members(
    path: Path, skip_invalid: bool = False, max_file_mb: float | None = MAX_FILE_MB
) -> tuple[dict[str, bytes], list[str]]:
    """All regular files of a tar (any compression) in memory, and its directory names.

    The archive is read, never extracted. Hidden members are left out unread. Every other
    member must be a regular file or folder inside the archive's own tree: an absolute
    name, a '..' component, a symbolic or hard link, a device or FIFO, a folder named
    like an image, or a member declared larger than ``max_file_mb`` (checked before it is
    read) stops with one line naming it (with ``skip_invalid``: is skipped, with one
    warning that names the first and counts them).

    Raises:
        DataError: If the archive is truncated or not a tar, or for the first unsafe
            member unless ``skip_invalid``.
    """
    files: dict[str, bytes] = {}
    dirs: list[str] = []
    rejected: list[tuple[str, str]] = []
    max_bytes = _bytes(max_file_mb)
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                parts = PurePosixPath(name).parts
                if not parts or (is_hidden(parts) and not _name_problem(member.name)):
                    continue
                problem = _member_problem(member, name, max_bytes)
                if problem:
                    rejected.append((member.name, problem))
                elif member.isdir():
                    dirs.append(name.rstrip("/"))
                else:
                    f = tar.extractfile(member)
                    if f is not None:
                        files[name] = f.read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise DataError(f"{path}: truncated or corrupt tar archive ({type(e).__name__}: {e})") from None
    _refuse(rejected, str(path), "member", skip_invalid)
    return files, dirs


def decode_image(data: bytes, size: int, where: str) -> np.ndarray:
    """Decode one image file to uint8 (size, size, 3) RGB.

    Grayscale, palette, 16-bit and images with alpha become RGB (transparent areas over
    white); other sizes are resized on the shorter side and centre-cropped.

    Raises:
        DataError: If the bytes are not a decodable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as f:
            f.load()
            img = _to_rgb(f)
            if img.size != (size, size):
                img = _resize_center_crop(img, size)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from None
    return arr


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float64)
        # 16-bit samples scaled to 8 bits (65535 -> 255).
        scale = 257.0 if a.max(initial=0) > 255 or img.mode.startswith("I;16") else 1.0
        img = Image.fromarray(np.clip(np.round(a / scale), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


@dataclass(frozen=True)
class FileRef:
    """One image file of a source: where its bytes are and which label it has.

    Attributes:
        name: Shown in messages (``source/relative/path``).
        rel: Path relative to ``store``.
        store: A folder, or the in-memory files of a tar.
        label: Class index.
    """

    name: str
    rel: str
    store: Path | dict[str, bytes]
    label: int

    def read(self) -> bytes:
        """The file's bytes."""
        if isinstance(self.store, Path):
            return (self.store / self.rel).read_bytes()
        return self.store[self.rel]


def decode_files(
    refs: list[FileRef], size: int, skip_invalid: bool, progress: bool, desc: str = "decoding"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode files into (N, size, size, 3) uint8 images and (N,) int64 labels.

    Files without an image extension and undecodable files stop with an error naming the
    file, unless ``skip_invalid`` (then they are skipped, with one warning).
    """
    from tqdm import tqdm

    def one(ref: FileRef) -> np.ndarray | None:
        if Path(ref.rel).suffix.lower() not in IMAGE_EXTENSIONS:
            if skip_invalid:
                return None
            raise DataError(
                f"{ref.name} is not an image file (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "remove it or set data.skip_invalid=true"
            )
        try:
            return decode_image(ref.read(), size, ref.name)
        except (DataError, OSError) as e:
            if skip_invalid:
                return None
            if isinstance(e, DataError):
                raise
            raise DataError(f"{ref.name}: cannot read ({e})") from None

    images = np.empty((len(refs), size, size, 3), dtype=np.uint8)
    keep = np.ones(len(refs), dtype=bool)
    # Pillow's decoders release the GIL, so threads help on large folders.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = pool.map(one, refs, chunksize=256)
        bar = tqdm(
            results, total=len(refs), desc=desc, disable=not progress or len(refs) < 5000, leave=False, unit="img"
        )
        for i, arr in enumerate(bar):
            if arr is None:
                keep[i] = False
            else:
                images[i] = arr
    labels = np.array([r.label for r in refs], dtype=np.int64)
    skipped = int((~keep).sum())
    if skipped:
        warnings.warn(f"{desc}: skipped {skipped} unreadable or non-image files", stacklevel=2)
        images, labels = images[keep], labels[keep]
    return images, labels
