"""Files on disk: the one table of image file endings, the one overwrite refusal,
the one atomic writer and the one hasher.

Every output mrisr writes (volumes, model files, training state, JSON sidecars,
figures) goes through :func:`write_atomic`: it is written to a hidden temporary
file in the target's folder and renamed into place, so a crash or a failed
write never leaves half a file, and an existing file stays intact until the new
one is complete. Within :func:`renamed_together`, the renames wait for the end
of the block, so a set of files (image, map, sidecar, adapted model) replaces
an earlier set whole or not at all. :func:`check_output` is the refusal it
applies first (and that callers apply early, before minutes of work): never
over an input, never over an existing file without ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from mrisr.errors import InputError, MrisrError, OutputError

#: Image file endings mrisr reads, and the format each names.
READ_FORMATS = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".mgz": "mgh",
    ".mgh": "mgh",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
#: Image file endings mrisr writes. Detached-header formats (.nhdr, .mhd) are
#: read but not written: their two files cannot be renamed into place in one step.
WRITE_FORMATS = {
    suffix: kind for suffix, kind in READ_FORMATS.items() if suffix not in (".nhdr", ".mhd")
}
#: Names of the formats for messages.
FORMAT_LABELS = {"nifti": "NIfTI", "mgh": "MGH", "nrrd": "NRRD", "metaimage": "MetaImage"}
#: What mrisr reads, for messages.
READABLE = (
    "a NIfTI (.nii, .nii.gz), MGH (.mgz, .mgh), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) "
    "file, or a folder holding one DICOM series"
)

#: Exceptions that mean "the write failed" (disk full, permissions, a writer
#: library's refusal); they become an OutputError naming the file.
_WRITE_FAILURES = (OSError, RuntimeError, ValueError)
#: The (temporary, target) renames that wait for the end of a :func:`renamed_together`
#: block in this thread (a context variable: each thread has its own).
_PENDING: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("mrisr_pending", default=None)


def refuse_empty_path(
    path: str | Path,
    *,
    expected: str,
    names: str = "nothing",
    error: type[MrisrError] = InputError,
) -> None:
    """Refuse an empty text as a path: ``Path("")`` would silently be the current folder.

    Args:
        path: what the user passed (a ``Path`` is never empty: it passes).
        expected: what should be named, for the message.
        names: what an empty path names, for the message ("nothing", "no scan").
        error: the error class.

    Raises:
        MrisrError: ``error``, for an empty or all-blank text.
    """
    if isinstance(path, str) and not path.strip():
        raise error(
            f"an empty path names {names} (it would mean the current folder)",
            expected=expected,
            fix=f"name the {'scan' if names == 'no scan' else 'file'} or folder "
            "('.' for the current folder)",
        )


def require_existing(
    path: str | Path,
    *,
    expected: str,
    fix: str = "check the path",
    error: type[MrisrError] = InputError,
    kind: str = "path",
) -> Path:
    """``path`` as a Path, or a clear error when there is nothing of that kind there.

    The one "does not exist" check for every file mrisr is given (scans,
    model files, training state, perceptual weights, training folders).

    Args:
        path: what the user passed.
        expected: what should be there, for the message.
        fix: how to fix it, for the message.
        error: the error class (InputError for images, CheckpointError for model files...).
        kind: ``"path"`` (anything), ``"file"`` or ``"folder"``.

    Returns:
        ``Path(path)``.

    Raises:
        MrisrError: ``error``, when nothing (of ``kind``) exists at ``path``; a
            symbolic link to nothing is named as one, with its target; an
            empty text (which ``Path`` would read as the current folder).
    """
    refuse_empty_path(path, expected=expected, error=error)
    path = Path(path)
    there = {"path": path.exists, "file": path.is_file, "folder": path.is_dir}[kind]()
    if not there:
        target = broken_link_target(path)
        if target is not None:
            raise error(
                f"is a broken symbolic link: its target {target} does not exist",
                path=path,
                expected=expected,
                fix=BROKEN_LINK_FIX,
            )
        if kind == "folder":
            problem = "is not a folder" + ("" if path.exists() else " (nothing exists there)")
        else:
            problem = "does not exist" if not path.exists() else f"is not a {kind}"
        raise error(problem, path=path, expected=expected, fix=fix)
    return path


#: What to do about a symbolic link whose target is missing.
BROKEN_LINK_FIX = (
    "restore the target (a moved or unmounted folder?), point the link at the file "
    "(ln -sfn FILE LINK), or remove the link"
)


def broken_link_target(path: str | Path) -> str | None:
    """Where ``path`` points when it is a symbolic link to nothing (missing target, loop), else None.

    Returns:
        The target as a path from the current folder (a relative link's target
        is relative to the link's folder), or None.
    """
    path = Path(path)
    if not path.is_symlink() or path.exists():
        return None
    target = os.readlink(path)
    return target if os.path.isabs(target) else os.path.normpath(path.parent / target)


def suffix(path: str | Path) -> str:
    """The ending that names a file's format, lower case (``.nii.gz`` counts as one).

    Args:
        path: a file name or path.

    Returns:
        e.g. ``".nii.gz"``, ``".mgz"``, ``".png"``; ``""`` when the name has none.
    """
    path = Path(path)
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()


def stem(path: str | Path) -> str:
    """The file name without its image ending (``scan.nii.gz`` -> ``scan``).

    Names without an ending of :data:`READ_FORMATS` (a DICOM folder such as
    ``1.2.840.1``) are returned whole.

    Args:
        path: a file or folder path.

    Returns:
        The name, case kept.
    """
    name = Path(path).name
    ending = suffix(name)
    return name[: len(name) - len(ending)] if ending in READ_FORMATS else name


def same_file(path: str | Path, other: str | Path) -> bool:
    """Whether two paths name one file: the same resolved path, or a hard link."""
    path, other = Path(path).expanduser().absolute(), Path(other).expanduser().absolute()
    return path.resolve() == other.resolve() or (
        path.exists() and other.exists() and os.path.samefile(path, other)
    )


def check_output(
    path: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()
) -> Path:
    """Refuse an output path that mrisr must not write; the one place this is decided.

    Args:
        path: the output file.
        overwrite: allow replacing an existing file (never an input).
        inputs: the files or folders the output is made from (None entries are
            skipped); the output may be none of them, also through a symlink.

    Returns:
        The absolute output path.

    Raises:
        OutputError: the path is one of ``inputs``, its folder does not exist,
            it is a folder, or it exists and ``overwrite`` is False.
    """
    path = Path(path).expanduser().absolute()
    for source in inputs:
        if source is None:
            continue
        source = Path(source).expanduser().absolute()
        if same_file(path, source):
            raise OutputError(
                f"is the input {source}; mrisr never writes over its input",
                path=path,
                expected="an output path different from the input",
                fix="pass another output path with -o",
            )
    if not path.parent.is_dir():
        raise OutputError(
            f"cannot be written: its folder {path.parent} does not exist",
            path=path,
            expected="an existing folder",
            fix="create the folder first (mkdir -p) or choose another output path",
        )
    if path.is_dir():
        raise OutputError(
            "is a folder", path=path, expected="a file name", fix="name an output file inside it"
        )
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(
            "already exists",
            path=path,
            expected="a path that does not exist yet",
            fix="pass --overwrite (overwrite=True) to replace it, or choose another output path",
        )
    return path


def check_sidecar_owner(sidecar: str | Path, image: str | Path) -> None:
    """Refuse to replace a JSON sidecar that belongs to another image, even with overwrite.

    Sidecars are named after the image's stem (``x.nii.gz`` and ``x.mgz`` both
    get ``x.json``, as BIDS names them), so two outputs that differ only in
    their ending would share one: the second would silently replace the first's
    provenance. An existing sidecar may be replaced only when it is mrisr's
    record of this same image, or of an image that no longer exists.

    Args:
        sidecar: the JSON file about to be written.
        image: the image it describes.

    Raises:
        OutputError: the sidecar exists and is not mrisr's, or records another
            image that still exists.
    """
    sidecar, image = Path(sidecar).absolute(), Path(image).absolute()
    if not sidecar.exists():
        return
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        record = None
    owner = record.get("output") if isinstance(record, dict) and "mrisr_version" in record else None
    if owner is None:
        raise OutputError(
            f"exists and is not an mrisr provenance record; the sidecar of {image.name} would "
            "replace it",
            path=sidecar,
            expected="no file there, or mrisr's own sidecar of the same output",
            fix="choose another output name with -o, or move that JSON file away",
        )
    owner_path = Path(str(owner))
    if owner_path.resolve() != image.resolve() and owner_path.exists():
        raise OutputError(
            f"is the provenance sidecar of {owner_path.name}; writing {image.name}'s sidecar "
            "there would lose that image's provenance (both are named after the stem)",
            path=sidecar,
            expected=f"an output whose stem is not that of {owner_path.name}",
            fix=f"choose another output name with -o (e.g. another stem than {sidecar.stem!r}), "
            f"or delete {owner_path.name} and its sidecar first",
        )


def make_folder(path: str | Path, *, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) as a folder, or refuse it with a clear error.

    Args:
        path: the folder.
        what: what it is for, for the message ("run folder", "output folder").

    Returns:
        The absolute folder path.

    Raises:
        OutputError: it, or a folder above it, is a file; or it cannot be created.
    """
    path = Path(path).expanduser().absolute()
    check_folder_creatable(path, what=what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(
            f"cannot be created as the {what}: {error.strerror or error}",
            path=path,
            fix="check the permissions of the folder above it, or choose another path",
        ) from None
    return path


def check_folder_creatable(path: str | Path, *, what: str = "output folder") -> None:
    """Refuse a folder path that is a file, or lies under one, before any work.

    Raises:
        OutputError: ``path`` or its nearest existing ancestor is not a folder.
    """
    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise OutputError(
            f"{where}, not a folder: it cannot be the {what}",
            path=path,
            expected=f"a folder (or a path where one can be created) for the {what}",
            fix="choose another path, or move that file away",
        )


def check_writable(path: str | Path) -> Path:
    """Refuse an output whose folder mrisr cannot create files in, before any work.

    Creates and removes the same hidden temporary file :func:`write_atomic`
    would, so the answer is the file system's own (permissions, read-only
    mounts, quotas on inodes), not a guess from mode bits.

    Args:
        path: the output file (its folder must exist).

    Returns:
        The absolute output path.

    Raises:
        OutputError: a file cannot be created in the output's folder.
    """
    path = Path(path).expanduser().absolute()
    _reserve_temporary(path).unlink()
    return path


def write_atomic(
    path: str | Path,
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Write a file through a temporary file beside it, then rename it into place.

    ``write`` gets a hidden, empty ``.{stem}.tmp-XXXXXXXX{ending}`` in the
    target's folder (the ending is kept so that nibabel, SimpleITK and
    matplotlib recognise the format). Once it returns, the file is flushed to
    disk, given the permissions a plain ``open()`` would (0666 less the umask)
    and renamed over ``path`` in one step. If anything fails, the temporary
    file is removed and an existing ``path`` is left as it was.

    Args:
        path: the output file.
        write: writes the whole content to the path it is given.
        overwrite: allow replacing an existing file (never an input).
        inputs: files the output must not be (see :func:`check_output`).

    Returns:
        The absolute output path.

    Raises:
        OutputError: refused by :func:`check_output`, or the write failed
            (OSError, RuntimeError or ValueError from ``write``, e.g. a full
            disk). mrisr's own errors and other exceptions from ``write`` pass
            through unchanged.
    """
    path = check_output(path, overwrite=overwrite, inputs=inputs)
    temporary = _reserve_temporary(path)
    try:
        write(temporary)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        # Some writers (safetensors) recreate the file privately (0600).
        os.chmod(temporary, 0o666 & ~_umask())
        pending = _PENDING.get()
        if pending is None:
            _rename_into_place(temporary, path)
        else:  # renamed with the rest of the set at the end of renamed_together
            pending.append((temporary, path))
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, MrisrError) or not isinstance(exc, _WRITE_FAILURES):
            raise
        raise OutputError(
            f"could not be written: {exc}",
            path=path,
            expected="a writable folder with free space",
            fix="check the folder's permissions and free space, or choose another output path",
        ) from exc
    return path


@contextmanager
def renamed_together() -> Iterator[None]:
    """Files written by :func:`write_atomic` in this block are renamed into place at its end.

    Each file is complete at its hidden temporary name when the block ends;
    then all are renamed in the order written. When the block raises (a
    failed write, a full disk, Ctrl-C), the temporaries are removed and the
    targets are untouched: an earlier result set stays whole, never mixed
    with a new one. A block inside another joins the outer one.

    Raises:
        OutputError: a rename failed at the end (the files not yet renamed
            are removed; those renamed stay).
    """
    if _PENDING.get() is not None:  # the outer block renames
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for temporary, _ in pending:
            temporary.unlink(missing_ok=True)
        raise
    finally:
        _PENDING.reset(token)
    for position, (temporary, path) in enumerate(pending):
        try:
            _rename_into_place(temporary, path)
        except OSError as exc:
            for left, _ in pending[position:]:
                left.unlink(missing_ok=True)
            raise OutputError(
                f"could not be renamed into place: {exc}",
                path=path,
                expected="a folder where the finished file can replace its temporary",
                fix="check the folder's permissions and free space, then run again with "
                "--overwrite (files of the same set renamed before it are in place)",
            ) from exc


def _rename_into_place(temporary: Path, path: Path) -> None:
    """The one rename of the package: a complete temporary becomes the output, atomically."""
    os.replace(temporary, path)


def _reserve_temporary(path: Path) -> Path:
    """Create an empty, unique, private ``.{stem}.tmp-XXXXXXXX{ending}`` beside ``path``."""
    ending = suffix(path)
    name = path.name[: len(path.name) - len(ending)]
    for _ in range(100):
        candidate = path.with_name(f".{name}.tmp-{secrets.token_hex(4)}{ending}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(
                f"cannot be written: {exc.strerror or exc}",
                path=path,
                expected="a writable folder",
                fix="check the folder's permissions, or choose another output path",
            ) from exc
        return candidate
    raise OutputError("cannot be written: no free temporary name", path=path)


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a DICOM folder's files, for provenance records.

    Args:
        path: a file, or a folder whose regular files (not sub-folders) are
            hashed in name order, each as its name and content digest.

    Returns:
        64 hexadecimal characters.

    Raises:
        InputError: the path does not exist.
    """
    path = require_existing(path, expected="a file or folder to hash")
    if not path.is_dir():
        return _hash_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(child.name.encode() + b"\0" + _hash_file(child).encode() + b"\n")
    return digest.hexdigest()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
