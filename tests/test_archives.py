"""Hostile and odd sources: archive members and folder entries that are not regular files inside the source.

Each case goes through the CLI, as a new user would meet it: the exit code, the one-line
message that names the entry, and that nothing outside the run directory changed.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import cli_flags, write_image_folder
from selfsup.cli import main
from selfsup.data.readers import list_directory, read_tar_members


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _tar_with(tmp_path: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    """A train/test PNG tree (3 classes) plus whatever ``extra`` adds, as a .tar."""
    src = write_image_folder(tmp_path / "tree", {"train": 4, "test": 2})
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(src, arcname=".")
        extra(tar)
    return path


def _file(name: str, data: bytes) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def _special(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        tar.addfile(info)

    return add


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*") if p.is_file() and ".lock" not in p.name}


def _pretrain(data: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["pretrain", "--out", str(out), *cli_flags(data, **{"train.epochs": 1}), *extra])
    return code, capsys.readouterr().err


CASES = {
    "absolute name": (lambda t: _file(str(t / "outside" / "x.png"), _png_bytes()), "has an absolute name"),
    "dot-dot": (lambda t: _file("train/cat/../../../../outside/x.png", _png_bytes()), "'..' component"),
    "symbolic link": (lambda t: _special("train/cat/link.png", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    "hard link": (lambda t: _special("train/cat/hard.png", tarfile.LNKTYPE, "train/cat/0000.png"), "is a link"),
    "device": (lambda t: _special("train/cat/dev.png", tarfile.CHRTYPE), "not a regular file"),
    "fifo": (lambda t: _special("train/cat/pipe.png", tarfile.FIFOTYPE), "not a regular file"),
    "folder named like an image": (lambda t: _special("train/cat/folder.png", tarfile.DIRTYPE), "named like an image"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unsafe_archive_members_are_refused_with_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = CASES[case]
    data = _tar_with(tmp_path, make(tmp_path))
    before = _snapshot(tmp_path)
    code, err = _pretrain(data, tmp_path / "run", capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("selfsup: error: ") and message in err
    assert "member " in err and "data.skip_invalid" in err
    assert not (tmp_path / "outside").exists()
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if "/run/" not in k} == before  # nothing outside the run changed


def test_skip_invalid_skips_unsafe_members_and_names_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def several(tar: tarfile.TarFile) -> None:
        _file("/abs/x.png", _png_bytes())(tar)
        _special("train/dog/link.png", tarfile.SYMTYPE, "/etc/passwd")(tar)

    data = _tar_with(tmp_path, several)
    with pytest.warns(
        UserWarning, match=r"skipped 2 members not safe to read: '/abs/x.png' has an absolute name and 1 more"
    ):
        code, err = _pretrain(data, tmp_path / "run", capsys, "--data.skip_invalid", "true", "--batch-size", "8")
    assert code == 0, err
    with pytest.warns(UserWarning, match="skipped 2 members"):
        files, _ = read_tar_members(data, skip_invalid=True)
    assert len(files) == 3 * 6 and not any("abs" in f or "link" in f for f in files)


def test_oversized_member_is_refused_before_it_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gzip bomb: 3 MB of zeros compress to a few kB; the header's size is checked first."""
    src = write_image_folder(tmp_path / "tree", {"train": 4, "test": 2})
    data = tmp_path / "bomb.tar.gz"
    with tarfile.open(data, "w:gz") as tar:
        tar.add(src, arcname=".")
        _file("train/cat/bomb.png", bytes(3 * 2**20))(tar)
    assert data.stat().st_size < 2**20
    code, err = _pretrain(data, tmp_path / "run", capsys, "--data.max_file_mb", "2")
    assert code == 2 and "'train/cat/bomb.png' is 3.0 MB, over the 2 MB limit" in err
    code, err = _pretrain(data, tmp_path / "run", capsys, "--data.max_file_mb", "0")
    assert code == 2 and "data.max_file_mb must be positive" in err


def _folder_with(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "imgs", {"train": 4, "test": 2})


def test_folder_link_leaving_the_folder_is_named_not_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder_with(tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png_bytes())
    (root / "train" / "cat" / "leak.png").symlink_to(secret)
    before = _snapshot(tmp_path)
    code, err = _pretrain(root, tmp_path / "run", capsys)
    assert code == 2 and "entry 'train/cat/leak.png' is a symbolic link to" in err and "outside the data folder" in err
    assert err.count("\n") == 1 and {k: v for k, v in _snapshot(tmp_path).items() if "/run/" not in k} == before
    # A link that stays inside the folder is an ordinary file.
    (root / "train" / "cat" / "leak.png").unlink()
    (root / "train" / "cat" / "again.png").symlink_to(root / "train" / "cat" / "0000.png")
    files, _ = list_directory(root)
    assert "train/cat/again.png" in files


def test_folder_special_files_and_folder_links(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder_with(tmp_path)
    os.mkfifo(root / "train" / "cat" / "pipe.png")  # reading it would block forever
    before = _snapshot(tmp_path)
    code, err = _pretrain(root, tmp_path / "run", capsys)
    assert code == 2 and "'train/cat/pipe.png' is not a regular file" in err and err.count("\n") == 1
    assert {k: v for k, v in _snapshot(tmp_path).items() if "/run/" not in k} == before
    (root / "train" / "cat" / "pipe.png").unlink()
    (root / "train" / "dog" / "more").symlink_to(root / "train" / "cat", target_is_directory=True)
    code, err = _pretrain(root, tmp_path / "run2", capsys)
    assert code == 2 and "links to folders are not followed" in err
    with pytest.warns(UserWarning, match="skipped 1 entry not safe to read: 'train/dog/more'"):
        files, _ = list_directory(root, skip_invalid=True)
    assert not any(f.startswith("train/dog/more") for f in files)


def test_embed_follows_the_same_rules(
    reference_run: Path, shared_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _tar_with(tmp_path, _file("/abs/x.png", _png_bytes()))
    code = main(["embed", str(reference_run), "--data", str(data), "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "has an absolute name" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    emb = tmp_path / "emb"
    args = ["embed", str(reference_run), "--data", str(shared_folder), "--split", "test", "--out", str(emb)]
    assert main(args) == 0
    capsys.readouterr()
    fifo = tmp_path / "q.png"
    os.mkfifo(fifo)  # reading it would block forever
    code = main(["embed", "--out", str(emb), "--query", str(fifo)])
    err = capsys.readouterr().err
    assert code == 2 and "query image not a regular file" in err and err.count("\n") == 1
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(65 * 2**20)  # sparse: costs no disk
    code = main(["embed", "--out", str(emb), "--query", str(huge)])
    err = capsys.readouterr().err
    assert code == 2 and "over the 64 MB limit" in err
