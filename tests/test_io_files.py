"""mrisr.io.files: the one atomic writer, overwrite refusal, hasher and table of endings."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from mrisr.errors import ConfigError, InputError, OutputError
from mrisr.io.files import (
    READ_FORMATS,
    WRITE_FORMATS,
    check_output,
    file_sha256,
    stem,
    suffix,
    write_atomic,
)


def write_text(content: str):
    def write(temporary: Path) -> None:
        temporary.write_text(content)

    return write


def test_writes_the_file_and_returns_its_absolute_path(tmp_path: Path) -> None:
    written = write_atomic(tmp_path / "out.json", write_text("{}"))
    assert written == tmp_path / "out.json" and written.is_absolute()
    assert written.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.parametrize("error", [OSError("disk full"), RuntimeError("itk"), ValueError("nib")])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_a_failed_write_leaves_no_temporary_and_keeps_the_old_file(
    tmp_path: Path, error: Exception, existing: bool
) -> None:
    target = tmp_path / "out.nii.gz"
    if existing:
        target.write_bytes(b"earlier")
    seen: list[Path] = []

    def half_write_then_fail(temporary: Path) -> None:
        seen.append(temporary)
        temporary.write_bytes(b"half a file")
        raise error

    with pytest.raises(OutputError, match=str(error)) as caught:
        write_atomic(target, half_write_then_fail, overwrite=existing)
    assert caught.value.__cause__ is error
    assert [p.name for p in tmp_path.iterdir()] == (["out.nii.gz"] if existing else [])
    if existing:
        assert target.read_bytes() == b"earlier"
    # The temporary was hidden, beside the target, with the target's ending.
    (temporary,) = seen
    assert temporary.parent == tmp_path
    assert temporary.name.startswith(".out.tmp-") and temporary.name.endswith(".nii.gz")


@pytest.mark.parametrize("error", [ConfigError("bad state"), KeyboardInterrupt()])
def test_own_errors_and_interrupts_pass_through_and_leave_nothing(
    tmp_path: Path, error: BaseException
) -> None:
    def fail(temporary: Path) -> None:
        temporary.write_bytes(b"x")
        raise error

    with pytest.raises(type(error)):
        write_atomic(tmp_path / "model.safetensors", fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path: Path, mask: int) -> None:
    def write_private(temporary: Path) -> None:
        # As safetensors does: recreate the file, privately.
        temporary.unlink()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(descriptor)

    previous = os.umask(mask)
    try:
        written = write_atomic(tmp_path / "model.safetensors", write_private)
        plain = tmp_path / "plain"
        plain.write_text("")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(written.stat().st_mode)
    assert mode == 0o666 & ~mask == stat.S_IMODE(plain.stat().st_mode)


def test_refuses_an_existing_output_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"earlier")
    with pytest.raises(OutputError) as caught:
        write_atomic(target, write_text("new"))
    assert "already exists" in str(caught.value) and "--overwrite" in str(caught.value)
    assert target.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    write_atomic(target, write_text("new"), overwrite=True)
    assert target.read_text() == "new"


@pytest.mark.parametrize("how", ["same", "relative", "symlink"])
def test_refuses_the_input_even_with_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    source = tmp_path / "scan.nii.gz"
    source.write_bytes(b"input")
    target = source
    if how == "relative":
        monkeypatch.chdir(tmp_path)
        target = Path("scan.nii.gz")
    elif how == "symlink":
        target = tmp_path / "link.nii.gz"
        target.symlink_to(source)
    with pytest.raises(OutputError) as caught:
        write_atomic(target, write_text("new"), overwrite=True, inputs=[None, source])
    assert "input" in str(caught.value) and "-o" in str(caught.value)
    assert source.read_bytes() == b"input"


def test_refuses_a_missing_folder_and_a_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "missing" / "out.nii.gz")
    (tmp_path / "out.nii.gz").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path / "out.nii.gz", overwrite=True)


def test_file_sha256_of_a_file_and_a_folder(tmp_path: Path) -> None:
    single = tmp_path / "scan.nii.gz"
    single.write_bytes(b"voxels")
    assert file_sha256(single) == hashlib.sha256(b"voxels").hexdigest()
    with pytest.raises(InputError, match="does not exist"):
        file_sha256(tmp_path / "missing")


@pytest.mark.parametrize(
    ("name", "ending", "name_stem"),
    [
        ("scan.nii.gz", ".nii.gz", "scan"),
        ("Scan.NII.GZ", ".nii.gz", "Scan"),
        ("brain.mgz", ".mgz", "brain"),
        ("a.b.nrrd", ".nrrd", "a.b"),
        ("1.2.840.10008", ".10008", "1.2.840.10008"),  # a DICOM folder keeps its name
        ("figure.png", ".png", "figure.png"),
        ("dicom", "", "dicom"),
    ],
)
def test_endings(name: str, ending: str, name_stem: str) -> None:
    assert suffix(name) == ending
    assert stem(Path("/data") / name) == name_stem


def test_written_formats_are_read_formats_without_detached_headers() -> None:
    assert set(WRITE_FORMATS) == set(READ_FORMATS) - {".nhdr", ".mhd"}


@pytest.mark.parametrize(
    ("kind", "make", "problem"),
    [
        ("path", None, "does not exist"),
        ("file", None, "does not exist"),
        ("file", "folder", "is not a file"),
        ("folder", None, r"is not a folder \(nothing exists there\)"),
        ("folder", "file", "is not a folder$|is not a folder;"),
    ],
)
def test_require_existing_names_the_path_the_problem_and_the_fix(tmp_path, kind, make, problem):
    from mrisr.errors import CheckpointError
    from mrisr.io.files import require_existing

    path = tmp_path / "thing"
    if make == "folder":
        path.mkdir()
    elif make == "file":
        path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=problem) as caught:
        require_existing(
            path, expected="a model", fix="pass another", error=CheckpointError, kind=kind
        )
    message = str(caught.value)
    assert str(path) in message and "expected a model" in message and "Fix: pass another" in message


def test_require_existing_returns_the_path(tmp_path):
    from mrisr.io.files import require_existing

    assert require_existing(str(tmp_path), expected="a folder", kind="folder") == tmp_path


def test_files_written_together_replace_an_earlier_set_whole_or_not_at_all(tmp_path: Path) -> None:
    from mrisr.io.files import renamed_together

    old = {name: f"old {name}" for name in ("image", "map", "sidecar")}
    for name, text in old.items():
        (tmp_path / name).write_text(text)

    def text_writer(text: str):
        return lambda temporary: temporary.write_text(text)

    def full_disk(temporary: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left"), renamed_together():
        write_atomic(tmp_path / "image", text_writer("new image"), overwrite=True)
        write_atomic(tmp_path / "map", full_disk, overwrite=True)
    # The new image was complete, but the set was not: the earlier set is whole.
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old

    with renamed_together():
        for name in old:
            write_atomic(tmp_path / name, text_writer(f"new {name}"), overwrite=True)
        with renamed_together():  # an inner block joins the outer one
            write_atomic(tmp_path / "extra", text_writer("new extra"))
        assert (tmp_path / "image").read_text() == "old image"  # nothing renamed yet
        assert not (tmp_path / "extra").exists()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        name: f"new {name}" for name in (*old, "extra")
    }


def test_a_rename_that_fails_names_the_file_and_the_fix(tmp_path: Path, monkeypatch) -> None:
    from mrisr.io import files

    real = files._rename_into_place

    def refuse_the_map(temporary: Path, path: Path) -> None:
        if path.name == "map":
            raise PermissionError(13, "Permission denied")
        real(temporary, path)

    monkeypatch.setattr(files, "_rename_into_place", refuse_the_map)
    with pytest.raises(OutputError) as caught, files.renamed_together():
        for name in ("image", "map", "sidecar"):
            write_atomic(tmp_path / name, lambda temporary: temporary.write_text("new"))
    message = str(caught.value)
    assert str(tmp_path / "map") in message and "could not be renamed into place" in message
    assert "Fix: check the folder's permissions and free space" in message, message
    # The set up to the failure is in place, as the fix says; no temporary is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image"]


def test_an_interrupted_set_leaves_no_temporaries(tmp_path: Path) -> None:
    from mrisr.io.files import renamed_together

    with pytest.raises(KeyboardInterrupt), renamed_together():
        write_atomic(tmp_path / "a", lambda temporary: temporary.write_text("a"))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
