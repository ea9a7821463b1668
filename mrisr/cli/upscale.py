"""Super-resolve a thick-slice scan into an isotropic volume (+ a JSON sidecar)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mrisr.cli import options as opt
from mrisr.cli.common import progress_bar, say

NAME = "upscale"


def command(
    scans: Annotated[
        list[Path],
        typer.Argument(
            parser=opt.non_empty_path,
            help="NIfTI, MGH, NRRD, MHA file or DICOM folder. Several scans, folders of scans "
            "or quoted globs ('data/**/*.nii.gz') run in one process: the model loads once, "
            "finished scans are skipped, a failed scan does not stop the others.",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            parser=opt.non_empty_path,
            help="Output file; default <stem>_sr.nii.gz beside the input. With several scans "
            "-o is an output FOLDER (created when missing).",
        ),
    ] = None,
    model: opt.Model = None,
    factor: opt.Factor = None,
    spacing: opt.Spacing = None,
    axis: opt.Axis = None,
    fusion: opt.Fusion = "mean",
    consistency: opt.Consistency = None,
    consistency_profile: opt.ConsistencyProfile = "mean",
    clip_range: opt.ClipRange = True,
    disagreement: opt.Disagreement = True,
    tta: opt.Tta = False,
    thickness: opt.Thickness = None,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    precision: opt.Precision = "auto",
    batch_size: opt.BatchSize = 16,
    force: opt.Force = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    adapt: Annotated[
        bool,
        typer.Option(
            help="Fine-tune the model on the scan's own in-plane slices first; kept only "
            "when it improves held-out in-plane patches."
        ),
    ] = False,
    adapt_seconds: Annotated[
        float | None,
        typer.Option(help="Adaptation time budget in seconds, at most 3600; default 90."),
    ] = None,
    adapt_steps: Annotated[
        int | None,
        typer.Option(
            help="Adaptation budget in steps, 1 to 10000 (deterministic; not with --adapt-seconds)."
        ),
    ] = None,
    save_adapted: Annotated[
        Path | None,
        typer.Option(
            parser=opt.non_empty_path,
            help="Write the adapted model to this .safetensors file (for --model).",
        ),
    ] = None,
    dtype: opt.Dtype = "float32",
    shard: opt.Shard = None,
    summary: opt.Summary = None,
) -> None:
    arguments = dict(locals())
    from mrisr.cohort import is_single_scan
    from mrisr.io.outputs import default_output_path, disagreement_path, named_path
    from mrisr.models import ModelRequest
    from mrisr.shards import distributed_env
    from mrisr.upscale import upscale_file

    # Loaded inside upscale_file, after the scan is planned: the default model
    # depends on the factor. "cubic" never imports torch.
    request = ModelRequest(
        model, device=device, threads=threads, batch_size=batch_size, precision=precision
    )
    adapting = _adapt_settings(adapt, adapt_seconds, adapt_steps, save_adapted)
    options = opt.upscale_options(arguments, adapt=adapting)
    opt.refuse_ineffective(command, arguments)
    single = is_single_scan(scans)
    if single and output is not None and output.is_dir():  # -o results/ for one scan too
        output = output / default_output_path(scans[0]).name
    cohort = _cohort_reasons(scans, single, shard, summary, distributed_env()[1])
    if cohort and adapting is not None:
        _refuse_adapt_in_cohort(cohort)
    if cohort:
        grid = {"factor": factor, "axis": axis, "spacing_mm": spacing}
        _many(scans, output, request, options, grid, overwrite, shard, summary)
        return
    scan = scans[0]
    with progress_bar("slices") as bar:
        task = bar.add_task(f"upscaling {named_path(scan).name}", total=None)
        tuning = bar.add_task("adapting", total=None, visible=adapting is not None)
        unit = "steps" if adapt_steps is not None else "s"
        written, sidecar = upscale_file(
            scan,
            output,
            model=request,
            factor=factor,
            axis=axis,
            spacing_mm=spacing,
            options=options,
            overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            adapt_progress=lambda done, total: bar.update(
                tuning, completed=done, total=total, description=f"adapting ({unit})"
            ),
        )
    record = json.loads(sidecar.read_text())
    say(f"wrote {written} ({_stored(written, record)})")
    if disagreement:
        say(f"wrote {disagreement_path(written)}")
    say(f"wrote {sidecar}")
    if adapting is not None:
        _report_adaptation(record)


def _adapt_settings(
    adapt: bool, seconds: float | None, steps: int | None, save: Path | None
) -> object | None:
    """The adaptation settings, or None.

    Raises:
        ConfigError: budget or save options without --adapt, both budgets
            (--adapt-steps and --adapt-seconds), or settings AdaptSettings refuses.
    """
    from mrisr.errors import ConfigError

    if steps is not None and seconds is not None:
        raise ConfigError(
            f"--adapt-steps {steps} and --adapt-seconds {seconds:g} both given: the "
            "adaptation has one budget, in steps or in seconds",
            fix="keep one of --adapt-steps and --adapt-seconds",
        )
    if not adapt:
        given = [
            name
            for name, value in (
                ("--adapt-seconds", seconds),
                ("--adapt-steps", steps),
                ("--save-adapted", save),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} given without --adapt", fix="add --adapt, or drop them"
            )
        return None
    from mrisr.adapt_settings import AdaptSettings

    return AdaptSettings(steps=steps, seconds=seconds, save_path=save)


def _cohort_reasons(
    scans: list[Path], single: bool, shard: str | None, summary: Path | None, world: int
) -> list[tuple[str, str | None]]:
    """What selects cohort mode (mrisr.cohort), each with how to undo it for one scan.

    Empty for one plain scan.
    """
    reasons: list[tuple[str, str | None]] = []
    if not single:
        reasons.append(
            (f"{len(scans)} scans" if len(scans) > 1 else "a folder or glob of scans", None)
        )
    if summary is not None:
        reasons.append(("--summary", "drop --summary"))
    if shard is not None:
        reasons.append(("--shard", "drop --shard"))
    if world > 1:
        reasons.append((f"torchrun ({world} processes)", "run without torchrun"))
    return reasons


def _refuse_adapt_in_cohort(reasons: list[tuple[str, str | None]]) -> None:
    """Refuse --adapt in cohort mode, naming what selected it.

    Raises:
        ConfigError: always.
    """
    from mrisr.errors import ConfigError

    fix = (
        "adapt on one scan of the protocol with --adapt --save-adapted PATH, then upscale "
        "the rest with --model PATH"
    )
    undo = [u for _, u in reasons]
    if None not in undo:  # one scan: it can be adapted on its own
        fix = f"{' and '.join(u for u in undo if u)} to adapt this scan alone, or {fix}"
    raise ConfigError(
        "per-scan adaptation (--adapt) is not available in cohort mode, selected here by "
        + " and ".join(r for r, _ in reasons),
        expected="one scan, without --summary, --shard or torchrun, to adapt",
        fix=fix,
    )


def _report_adaptation(provenance: dict[str, Any]) -> None:
    """One line on what the adaptation did, from the sidecar's record."""
    record = provenance.get("adaptation", {})
    steps = record.get("steps")
    say(f"adaptation: {record.get('reason')} ({steps} step{'' if steps == 1 else 's'})")
    if record.get("saved_to"):
        say(f"wrote {record['saved_to']}")


def _stored(image: Path, provenance: dict[str, Any]) -> str:
    """``"29.6 MB, float32"``: the output's size on disk and how its voxels are stored."""
    from mrisr.io.storage import Storage

    record = provenance.get("output_storage", {})
    storage = Storage(
        record.get("dtype", "float32"), record.get("scl_slope", 1.0), record.get("scl_inter", 0.0)
    )
    return f"{image.stat().st_size / 1e6:.3g} MB, {storage.describe()}"


def _many(
    scans: list[Path],
    output: Path | None,
    request: Any,
    options: Any,
    grid: dict[str, Any],
    overwrite: bool,
    shard: str | None,
    summary: Path | None,
) -> None:
    """Several scans, or a summary or shard asked for: the cohort path (mrisr.cohort).

    Reported by mrisr.cli.cohort_report. One scan given with an output file
    name (an array-job task of one scan) keeps that name.
    """
    from mrisr.cli.cohort_report import run_and_report, summary_path
    from mrisr.cohort import ScanJob, is_single_scan, scan_jobs
    from mrisr.io.files import suffix
    from mrisr.io.scans import expand_scans
    from mrisr.shards import parse_shard

    shard_k_n = parse_shard(shard) if shard is not None else None
    if is_single_scan(scans) and output is not None and suffix(output) and not output.is_dir():
        jobs = [ScanJob(expand_scans(scans)[0], output)]
        folder = output.parent
    else:
        jobs = scan_jobs(scans, output)
        folder = output or Path.cwd()
    summary = summary or summary_path(folder, shard_k_n)
    settings = {**grid, "options": options, "overwrite": overwrite}
    run_and_report(jobs, request, shard=shard_k_n, summary=summary, **settings)
