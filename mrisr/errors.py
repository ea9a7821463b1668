"""The exceptions mrisr raises, each carrying what went wrong, where, and the fix.

Every error a user can cause is an :class:`MrisrError`. Its message names the
file (when there is one), the problem, what was expected and how to fix it, so
that the CLI can print it as it is and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class MrisrError(Exception):
    """Base class of mrisr's user-facing errors.

    Args:
        problem: what is wrong, e.g. ``"contains 12 NaN voxels"``.
        path: the file or folder concerned, if any.
        expected: what mrisr expected instead.
        fix: what the user can do about it.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        expected: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.expected = expected
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.path}: {self.problem}" if self.path is not None else self.problem
        if self.expected:
            text += f"; expected {self.expected}"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text


class InputError(MrisrError, ValueError):
    """An input image (file, folder or array) that mrisr cannot use."""


class GeometryError(InputError):
    """Voxel spacing or orientation that rules out thick-slice upscaling."""


class NotThickSliceError(GeometryError):
    """A scan with no thick axis to upscale: already (nearly) isotropic.

    A cohort run skips such scans (a study holds 3D scans beside 2D ones);
    a single ``mrisr upscale`` refuses them.
    """


class OutputError(MrisrError, OSError):
    """An output path that would overwrite the input or an existing file."""


class CheckpointError(MrisrError, ValueError):
    """A model file that is missing, truncated, unsafe or of another architecture."""


class ConfigError(MrisrError, ValueError):
    """A setting outside its allowed range, or an unreadable config file."""


@contextmanager
def naming_input(source: str | Path | None) -> Iterator[None]:
    """Let an mrisr error that names no file name the input scan ``source``.

    Errors about the model or the settings ("no bundled model covers factor 9",
    a factor outside the model's range, "has no voxel brighter than its
    background") are raised where the scan is unknown; the user must still
    learn which scan they concern. Errors already naming a file (a model file)
    pass unchanged.

    Raises:
        MrisrError: the same kind of error, with ``path=source`` when it had none.
    """
    try:
        yield
    except MrisrError as error:
        if error.path is not None or source is None:
            raise
        try:
            named = type(error)(error.problem, path=source, expected=error.expected, fix=error.fix)
        except TypeError:  # a subclass built otherwise: keep it as it is
            named = None
        if named is None:
            raise
        raise named from error
