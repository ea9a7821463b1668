"""Many scans in one process: find them, share them out, resume, survive failures, summarise.

A study is upscaled by one process (or one per GPU, or one per array-job
task) instead of one process per scan:

* :func:`~mrisr.io.scans.expand_scans`: files, folders and globs -> the sorted list of scans;
* :func:`parse_shard` and :func:`take_shard`: the K-th of N disjoint shares of
  that list (nnU-Net's ``-part_id/-num_parts``), for cluster array jobs;
* :func:`upscale_many`: one :class:`ScanRecord` per scan, the model loaded
  once per factor (:class:`ModelCache`), the next scan read and the previous
  one written in background threads while the current one computes, a
  finished scan skipped (resume by
  sidecar: same input SHA-256, model weights and options), and one bad scan
  recorded as ``"failed"`` while the rest go on;
* :func:`run_cohort`: the same under ``torchrun``: each rank takes its share
  and its own GPU, then rank 0 writes the JSON summary after all ranks end.

Each scan goes through :mod:`mrisr.upscale`'s own steps
(:func:`~mrisr.upscale.check_upscale_outputs`, :func:`~mrisr.io.load_volume`,
:func:`~mrisr.upscale.plan_upscale`, :func:`~mrisr.upscale.upscale_volume`,
:func:`~mrisr.upscale.write_upscaled`),
so an output written here is byte for byte what ``mrisr upscale scan`` writes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mrisr.errors import ConfigError, InputError, MrisrError, NotThickSliceError, OutputError
from mrisr.io.files import READ_FORMATS, suffix
from mrisr.io.outputs import default_output_path, sidecar_path, write_json_atomic
from mrisr.io.scans import READABLE, expand_scans, is_single_scan
from mrisr.models import ModelRequest, choose_model, default_model_path
from mrisr.resume import is_done, model_identity, resume_difference
from mrisr.shards import distributed_env, gather_records, parse_shard, rank_share, take_shard
from mrisr.upscale import UpscaleOptions

if TYPE_CHECKING:
    from mrisr.upscale import SliceModel, UpscalePlan
    from mrisr.volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "CohortSettings",
    "ModelCache",
    "ScanJob",
    "ScanRecord",
    "distributed_env",
    "expand_scans",
    "is_done",
    "is_single_scan",
    "model_identity",
    "parse_shard",
    "rank_share",
    "resume_difference",
    "run_cohort",
    "scan_jobs",
    "summarize",
    "take_shard",
    "upscale_many",
    "write_summary",
]

#: What happened to a scan.
Status = Literal["done", "skipped", "failed"]
#: A :class:`ScanRecord`'s note for a scan finished by an earlier run.
ALREADY_DONE = "already done with the same input, model and options"


# ------------------------------------------------------------------ jobs and records


@dataclass(frozen=True)
class ScanJob:
    """One scan to upscale and where its result goes.

    Attributes:
        input: the scan (file or DICOM folder).
        output: the output image; None: ``<stem>_sr.nii.gz`` beside the input.
        sidecar_fields: extra JSON fields for its sidecar (BIDS ``Sources``...).
        create_folder: create the output's folder when it is missing (BIDS
            ``sub-X/ses-Y/anat``).
        map_sidecar_fields: fields of a JSON sidecar for the disagreement map
            (BIDS derivatives); None: the map has none.
    """

    input: Path
    output: Path | None = None
    sidecar_fields: dict[str, Any] | None = field(default=None, compare=False)
    create_folder: bool = False
    map_sidecar_fields: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def output_path(self) -> Path:
        """Where the output image goes."""
        return self.output if self.output is not None else default_output_path(self.input)


@dataclass(frozen=True)
class ScanRecord:
    """What happened to one scan, for the summary.

    Attributes:
        index: the scan's position in the whole sorted list (before sharding).
        scan: the input path.
        status: ``"done"``, ``"skipped"`` (already done, resumed; or not a
            thick-slice scan) or ``"failed"``.
        seconds: time spent computing and writing the scan (reading overlaps
            the previous scan and is not counted; writing overlaps the next one).
        output: the output image (None when failed, or skipped as not thick-slice).
        error: the error message (failed only).
        rank: the torchrun rank that did it (0 in a plain process).
        note: why a scan was skipped: already done, or not a thick-slice scan.
    """

    index: int
    scan: str
    status: Status
    seconds: float
    output: str | None = None
    error: str | None = None
    rank: int = 0
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def scan_jobs(
    scans: Iterable[str | Path | ScanJob], output_dir: Path | None = None
) -> list[ScanJob]:
    """Jobs for scans: ScanJobs as they are, paths expanded (:func:`expand_scans`).

    Args:
        scans: paths, folders, patterns, or ready :class:`ScanJob` objects.
        output_dir: where outputs of expanded paths go (created when missing);
            None: beside each input.

    Returns:
        Jobs sorted by input path.

    Raises:
        InputError: see :func:`expand_scans`.
        OutputError: ``output_dir`` is a file or cannot be created, or two
            scans would write the same output.
    """
    # One path alone is one scan, not a sequence of one-letter paths.
    items = [scans] if isinstance(scans, (str, os.PathLike, ScanJob)) else list(scans)
    if not items:  # an empty list or an exhausted generator: nothing would happen, silently
        raise InputError("no scans were given", expected=READABLE, fix="pass scans or folders")
    jobs = [item for item in items if isinstance(item, ScanJob)]
    paths = [item for item in items if not isinstance(item, ScanJob)]
    if paths:
        found = expand_scans(paths)
        # Only once there are scans: a refused command leaves no empty output folder.
        if output_dir is not None:
            _make_output_folder(Path(output_dir))
        for scan in found:
            output = (
                None if output_dir is None else Path(output_dir) / default_output_path(scan).name
            )
            jobs.append(ScanJob(scan, output))
    jobs.sort(key=lambda job: str(job.input))
    _refuse_shared_outputs(jobs)
    return jobs


def _make_output_folder(folder: Path) -> None:
    if suffix(folder) in READ_FORMATS and not folder.is_dir():
        raise OutputError(
            "is an image file name, but several scans need an output folder",
            path=folder,
            expected="a folder (-o is a folder when several scans are given)",
            fix="name a folder with -o, e.g. -o results/",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise OutputError(
            "is not a folder",
            path=folder,
            expected="an output folder (-o is a folder when several scans are given)",
            fix="name a folder with -o",
        ) from error
    except OSError as error:
        raise OutputError(
            f"cannot be created: {error.strerror or error}",
            path=folder,
            expected="an output folder mrisr can create",
            fix="check its name and that its parent folder is writable, or name another folder "
            "with -o",
        ) from error


def _refuse_shared_outputs(jobs: Sequence[ScanJob]) -> None:
    """Two scans writing one output would silently lose one: refuse before any work."""
    seen: dict[Path, Path] = {}
    for job in jobs:
        output = job.output_path.absolute()
        if output in seen:
            raise OutputError(
                f"would be written for both {seen[output]} and {job.input}",
                path=output,
                expected="one output per scan",
                fix="give scans with the same name in different folders no common -o folder "
                "(leave -o out to write each result beside its scan)",
            )
        seen[output] = job.input


# ------------------------------------------------------------------ models


class ModelCache:
    """One loaded model per model file: the default model depends on the factor.

    ``get(factor)`` loads what ``model`` names at that factor the first time
    and returns the same object afterwards, so a cohort loads a model once,
    never once per scan. Thread-safe: the reading thread asks for the model a
    finished scan was made with (to resume it) while the main thread upscales.

    Args:
        model: a loaded :class:`~mrisr.upscale.SliceModel`, a
            :class:`~mrisr.models.ModelRequest`, a ``--model`` value, or None
            (the bundled model for each factor).
    """

    def __init__(self, model: SliceModel | ModelRequest | str | Path | None = None) -> None:
        self.model = model
        self._loaded: dict[Any, SliceModel] = {}
        self._keys: dict[float, Any] = {}
        self._lock = threading.Lock()

    @property
    def loads(self) -> int:
        """How many models were loaded."""
        return len(self._loaded)

    def get(self, factor: float) -> SliceModel:
        """The model for ``factor``, loaded once.

        Raises:
            ConfigError: no model for the factor (see :func:`mrisr.models.load_slice_model`).
            CheckpointError: a model file that is missing, unsafe or damaged.
        """
        with self._lock:
            key = self._key(factor)
            if key not in self._loaded:
                self._loaded[key] = choose_model(self.model, factor)
            return self._loaded[key]

    def _key(self, factor: float) -> Any:
        if factor not in self._keys:
            spec = self.model.spec if isinstance(self.model, ModelRequest) else self.model
            if spec is None:  # the bundled default: one file may serve several factors
                self._keys[factor] = ("default", default_model_path(factor))
            elif isinstance(spec, (str, Path)):
                self._keys[factor] = ("named", str(spec))
            else:
                self._keys[factor] = ("loaded", id(spec))
        return self._keys[factor]


# ------------------------------------------------------------------ one scan


@dataclass(frozen=True)
class CohortSettings:
    """The settings every scan of a cohort shares.

    Attributes:
        factor: upsampling factor; None: isotropic voxels for each scan.
        axis: thick axis; None: detected for each scan.
        options: see :class:`~mrisr.upscale.UpscaleOptions`.
        overwrite: redo finished scans and replace their outputs.
        spacing_mm: isotropic output spacing in mm instead of ``factor``
            (:func:`~mrisr.plan.plan_upscale`).

    Raises:
        ConfigError: options with per-scan adaptation (only upscale_file adapts), or
            a spacing with a factor or not a positive number.
    """

    factor: float | None = None
    axis: int | None = None
    options: UpscaleOptions = field(default_factory=UpscaleOptions)
    overwrite: bool = False
    spacing_mm: float | None = None

    def __post_init__(self) -> None:
        from mrisr.plan import check_grid_request

        check_grid_request(self.spacing_mm, self.factor, self.axis)  # before any scan
        if self.options.adapt is not None:
            raise ConfigError(
                "per-scan adaptation (options.adapt, --adapt) is not available in a cohort run",
                expected="options.adapt=None here; upscale_file (mrisr upscale SCAN) adapts",
                fix="adapt on one scan of the protocol with AdaptSettings(save_path=PATH) "
                "(--adapt --save-adapted PATH), then run the cohort with model=PATH (--model PATH)",
            )


@dataclass(frozen=True)
class _Prepared:
    """A scan read and planned by the reading thread, or skipped (``note`` says why)."""

    skipped: bool
    volume: Volume | None = None
    plan: UpscalePlan | None = None
    note: str | None = None


def _prepare(job: ScanJob, models: ModelCache, settings: CohortSettings) -> _Prepared:
    """The reading thread's part: resume check, output check, load, plan."""
    from mrisr.io import load_volume
    from mrisr.upscale import check_upscale_outputs, plan_upscale

    if not settings.overwrite:
        difference = resume_difference(job, models, settings)
        if difference is None:
            return _Prepared(skipped=True, note=ALREADY_DONE)
        sidecar = sidecar_path(job.output_path)
        if sidecar.is_file():
            raise OutputError(
                f"was made by an earlier run that does not match this one: {difference}",
                path=job.output_path,
                expected=f"no earlier output, or one this run would make (its sidecar "
                f"{sidecar.name} records how it was made)",
                fix="pass --overwrite to redo it, or write elsewhere"
                + (f", or remove the leftover {sidecar}" if not job.output_path.exists() else ""),
            )
    if job.create_folder:
        job.output_path.parent.mkdir(parents=True, exist_ok=True)
    check_upscale_outputs(
        job.input,
        job.output_path,
        overwrite=settings.overwrite,
        options=settings.options,
        map_sidecar=job.map_sidecar_fields is not None,
    )
    volume = load_volume(job.input)
    try:
        plan = plan_upscale(
            volume, factor=settings.factor, axis=settings.axis, spacing_mm=settings.spacing_mm
        )
    except NotThickSliceError as error:  # a 3D scan among 2D ones: nothing to do
        return _Prepared(skipped=True, note=f"not a thick-slice scan: {error.problem}")
    return _Prepared(False, volume, plan)


class _Pending:
    """A scan past its computing: skipped, failed, or computed and to be written."""

    def __init__(
        self,
        index: int,
        job: ScanJob,
        rank: int,
        seconds: float,
        result: Volume | None = None,
        error: str | None = None,
        skipped: bool = False,
        note: str | None = None,
    ) -> None:
        self.index, self.job, self.rank, self.seconds = index, job, rank, seconds
        self.result, self.error, self.skipped, self.note = result, error, skipped, note
        self.writing: Future | None = None

    def start_writing(self, writer: ThreadPoolExecutor, settings: CohortSettings) -> None:
        """Hand a computed result to the writing thread (and drop this reference to it)."""
        if self.result is not None:
            self.writing = writer.submit(_write, self.job, self.result, settings)
            self.result = None

    def record(self) -> ScanRecord:
        """Its record, once its writing (if any) has ended; a failed write is a failed scan."""
        error = self.error
        seconds = self.seconds
        if self.writing is not None:
            try:
                seconds += self.writing.result()
            except Exception as exc:  # the writer removed what it had written
                error = _failure(exc, self.job.input)
        job = self.job
        if error is not None:
            return ScanRecord(
                self.index, str(job.input), "failed", round(seconds, 3), None, error, self.rank
            )
        status: Status = "skipped" if self.skipped else "done"
        # A skipped scan has an output only when an earlier run made it.
        made = not self.skipped or self.note == ALREADY_DONE
        output = str(job.output_path.absolute()) if made else None
        return ScanRecord(
            self.index,
            str(job.input),
            status,
            round(seconds, 3),
            output,
            None,
            self.rank,
            self.note,
        )


def _compute(
    index: int,
    job: ScanJob,
    prepared: Future,
    models: ModelCache,
    settings: CohortSettings,
    rank: int,
) -> _Pending:
    """The main thread's part: model and upscale (:meth:`_Pending.start_writing` writes).

    Any failure becomes a failed :class:`_Pending`: one bad scan never stops the others.
    """
    from mrisr.upscale import upscale_volume

    start = time.perf_counter()
    try:
        ready = prepared.result()
        if ready.skipped:
            seconds = time.perf_counter() - start
            return _Pending(index, job, rank, seconds, skipped=True, note=ready.note)
        result = upscale_volume(
            ready.volume, models.get(ready.plan.factor), plan=ready.plan, options=settings.options
        )
    except Exception as exc:
        error = _failure(exc, job.input)
        return _Pending(index, job, rank, time.perf_counter() - start, error=error)
    return _Pending(index, job, rank, time.perf_counter() - start, result=result)


def _write(job: ScanJob, result: Volume, settings: CohortSettings) -> float:
    """The writing thread's part: image, disagreement map and sidecar; returns its seconds."""
    from mrisr.upscale import write_upscaled

    start = time.perf_counter()
    write_upscaled(
        result,
        job.input,
        job.output_path,
        options=settings.options,
        overwrite=settings.overwrite,
        sidecar_fields=job.sidecar_fields,
        map_sidecar_fields=job.map_sidecar_fields,
    )
    return time.perf_counter() - start


def _remove_empty_folders(folder: Path) -> None:
    """Remove ``folder`` and its parents while they are empty."""
    try:
        os.removedirs(folder)
    except OSError:
        pass  # not empty (or gone): nothing of this scan's is left


def _failure(error: Exception, scan: Path) -> str:
    """A failed scan's message, logged with its traceback here.

    Only the text is kept: the exception's traceback holds the failed scan's
    arrays, which must not live on while the next scan computes.
    """
    log.debug("scan %s failed", scan, exc_info=error)
    if isinstance(error, MrisrError):
        return str(error)
    return f"{scan}: {type(error).__name__}: {error}"


# ------------------------------------------------------------------ many scans


def upscale_many(
    scans: Iterable[str | Path | ScanJob],
    model: SliceModel | ModelRequest | ModelCache | str | Path | None = None,
    *,
    output_dir: str | Path | None = None,
    factor: float | None = None,
    axis: int | None = None,
    spacing_mm: float | None = None,
    options: UpscaleOptions | None = None,
    overwrite: bool = False,
    shard: tuple[int, int] | str | None = None,
    rank: int = 0,
    **settings: Any,
) -> Iterator[ScanRecord]:
    """Upscale many scans in this process, yielding one record per scan as it ends.

    The model is loaded once per model file (:class:`ModelCache`); while a
    scan computes, one background thread checks and reads the next scan and
    another writes the previous one (a record is yielded once its scan is
    written, so records come one scan behind the computing). A scan
    already finished with the same input, model and options is ``"skipped"``
    (``overwrite`` redoes it), and so is a scan with no thick axis when no
    ``axis`` is given (a 3D scan among 2D ones; its record's ``note`` says
    so); a scan that fails is ``"failed"`` with its message and leaves no
    output, and the others go on.

    Args:
        scans: files, folders, glob patterns (see :func:`expand_scans`) or
            :class:`ScanJob` objects; one path or job alone is taken as one scan.
        model: as for :func:`mrisr.upscale.upscale_file`, or a :class:`ModelCache`.
        output_dir: folder for the outputs of path arguments (created when
            missing); default beside each scan.
        factor: upsampling factor; default isotropic voxels for each scan.
        axis: thick axis; default detected for each scan.
        spacing_mm: isotropic output spacing in mm instead of ``factor``.
        options: see :class:`~mrisr.upscale.UpscaleOptions`.
        overwrite: redo finished scans, replacing their outputs.
        shard: (K, N) or ``"K/N"``: only the K-th of N shares of the sorted
            scans (:func:`take_shard`).
        rank: recorded in each record (set by :func:`run_cohort` under torchrun).
        **settings: fields of :class:`~mrisr.upscale.UpscaleOptions`.

    Yields:
        One :class:`ScanRecord` per scan of the share, in sorted order.

    Raises:
        InputError, OutputError, ConfigError: before any scan starts, for
            what concerns them all (nothing found, a bad shard, two scans
            sharing an output). Errors of one scan are recorded, not raised.
    """
    common = CohortSettings(
        factor, axis, UpscaleOptions.build(options, settings), overwrite, spacing_mm
    )
    jobs = list(enumerate(scan_jobs(scans, None if output_dir is None else Path(output_dir))))
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if shard is not None:
        jobs = take_shard(jobs, *shard)
    models = model if isinstance(model, ModelCache) else ModelCache(model)
    try:
        yield from _pipeline(jobs, models, common, rank)
    finally:
        # Leave no empty sub-X/anat behind for scans that failed (or were never
        # reached), once no thread reads or writes any more: a failed scan's
        # folder may be a later scan's too (sub-X/anat holds a T2w and a FLAIR).
        for folder in {job.output_path.parent for _, job in jobs if job.create_folder}:
            _remove_empty_folders(folder)


def _pipeline(
    jobs: list[tuple[int, ScanJob]], models: ModelCache, common: CohortSettings, rank: int
) -> Iterator[ScanRecord]:
    """:func:`upscale_many`'s three overlapping stages, one record per scan."""
    # Three stages overlap: the reader loads scan i+1 and the writer writes scan
    # i-1 while this thread computes scan i. One scan waits to be written at a
    # time, so memory holds at most two results.
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrisr-read") as reader,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="mrisr-write") as writer,
    ):
        upcoming: list[Future] = []
        try:
            upcoming = [reader.submit(_prepare, job, models, common) for _, job in jobs[:1]]
            previous: _Pending | None = None
            for position, (index, job) in enumerate(jobs):
                current = upcoming.pop(0)
                if position + 1 < len(jobs):  # read the next scan while this one computes
                    upcoming.append(reader.submit(_prepare, jobs[position + 1][1], models, common))
                computed = _compute(index, job, current, models, common, rank)
                if previous is not None:
                    yield previous.record()
                # Written only once the caller took the previous record: a caller
                # that stops there gets no further output.
                computed.start_writing(writer, common)
                previous = computed
            if previous is not None:
                yield previous.record()
        finally:
            for future in upcoming:  # the caller stopped early: do not read further
                future.cancel()
            # Leaving the writer's block waits for a write under way: no half-written scan.


def summarize(records: Sequence[ScanRecord]) -> dict[str, Any]:
    """The JSON summary of a cohort run: counts and one entry per scan (in list order)."""
    from mrisr import __version__

    ordered = sorted(records, key=lambda record: record.index)
    counts = {status: 0 for status in ("done", "skipped", "failed")}
    for record in ordered:
        counts[record.status] += 1
    return {
        "mrisr_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": counts,
        "seconds": round(sum(record.seconds for record in ordered), 3),
        "scans": [record.to_dict() for record in ordered],
    }


def check_summary_path(path: str | Path) -> Path:
    """Refuse a summary file that could not be written, before any scan runs.

    Raises:
        OutputError: its folder is missing or not writable, or it is a folder.
    """
    from mrisr.io.files import check_output, check_writable

    return check_writable(check_output(path, overwrite=True))


def write_summary(records: Sequence[ScanRecord], path: str | Path, **fields: Any) -> Path:
    """Write :func:`summarize` (plus ``fields``) atomically; a previous summary is replaced.

    Raises:
        OutputError: the folder is missing or not writable.
    """
    return write_json_atomic({**summarize(records), **fields}, Path(path), overwrite=True)


def run_cohort(
    scans: Iterable[str | Path | ScanJob],
    model: SliceModel | ModelRequest | str | Path | None = None,
    *,
    shard: tuple[int, int] | str | None = None,
    summary: str | Path | None = None,
    on_record: Callable[[ScanRecord], None] | None = None,
    **kwargs: Any,
) -> list[ScanRecord]:
    """:func:`upscale_many` for a command: torchrun ranks, shards and the summary file.

    Under torchrun (``WORLD_SIZE`` > 1) each rank takes its share of the
    (``shard``'s) scans and, for ``device`` auto or cuda, the GPU of its
    ``LOCAL_RANK``; the ranks then exchange their records (gloo), which waits
    for all of them, and rank 0 alone writes the summary.

    Args:
        scans: see :func:`upscale_many`.
        model: see :func:`upscale_many`.
        shard: (K, N) of an array job; torchrun ranks split that share further.
        summary: the JSON summary file (None: none).
        on_record: called with each record of this rank as it ends (progress).
        **kwargs: the other arguments of :func:`upscale_many`.

    Returns:
        The records of all ranks, in list order.

    Raises:
        See :func:`upscale_many`; a scan's own error is recorded, not raised.
    """
    rank, world, local_rank = distributed_env()
    if isinstance(shard, str):
        shard = parse_shard(shard)
    k, n = shard or (1, 1)
    if summary is not None and rank == 0:  # a summary that cannot be written fails now
        check_summary_path(summary)
    if world > 1:
        model = _rank_model(model, local_rank)
    records = []
    for record in upscale_many(scans, model, shard=rank_share(shard), rank=rank, **kwargs):
        records.append(record)
        if on_record is not None:
            on_record(record)
    if world > 1:
        records = gather_records(records, world)
    if summary is not None and rank == 0:
        write_summary(records, summary, shard=f"{k}/{n}", processes=world)
    return sorted(records, key=lambda record: record.index)


def _rank_model(model: Any, local_rank: int) -> Any:
    """Under torchrun, ``auto``/``cuda`` mean this rank's GPU (one process per GPU)."""
    if model is None or isinstance(model, (str, Path)):
        model = ModelRequest(model)
    if not isinstance(model, ModelRequest) or str(model.spec).strip().lower() == "cubic":
        return model
    from dataclasses import replace

    from mrisr.device import resolve_device

    return replace(model, device=str(resolve_device(model.device, local_rank)))
