"""What a command upscaling many scans shows: progress over scans, a summary table, an exit code.

Shared by ``mrisr upscale a b c ...`` and ``mrisr bids``; the work itself is
:func:`mrisr.cohort.run_cohort`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from mrisr.cli.common import console, output

#: Exit code when at least one scan of a cohort failed (the others were written).
EXIT_SCANS_FAILED = 3
#: Above this many scans the table lists only the failed ones (the JSON summary has all).
TABLE_ROWS = 40


def summary_path(folder: Path, shard: tuple[int, int] | None) -> Path:
    """``mrisr_summary.json`` in ``folder``; one per array-job task with ``--shard``."""
    if shard is None:
        return folder / "mrisr_summary.json"
    return folder / f"mrisr_summary_shard-{shard[0]}-of-{shard[1]}.json"


def run_and_report(
    jobs: Sequence[Any],
    model: Any,
    *,
    shard: tuple[int, int] | None,
    summary: Path,
    **settings: Any,
) -> None:
    """Upscale ``jobs`` with :func:`mrisr.cohort.run_cohort`, showing progress, then report.

    A progress bar over scans on a terminal, one plain line per scan otherwise
    (logs of batch jobs); then, on rank 0, a table and the summary's path.

    Raises:
        typer.Exit: with :data:`EXIT_SCANS_FAILED` when any scan failed.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from mrisr.cohort import run_cohort
    from mrisr.shards import distributed_env, rank_share, take_shard

    rank, world, _ = distributed_env()
    total = len(take_shard(jobs, *rank_share(shard)))
    where = f"rank {rank}/{world}: " if world > 1 else ""
    console.print(f"{where}{total} of {len(jobs)} scans in this process", highlight=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    columns += (TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task(f"{where}upscaling scans", total=total)
        done = 0

        def show(record: Any) -> None:
            nonlocal done
            done += 1
            bar.advance(task)
            if not console.is_terminal or record.status == "failed":
                line = f"{where}[{done}/{total}] {record.status} {record.scan} ({record.seconds:.1f} s)"
                console.print(line, highlight=False, soft_wrap=True)
                if record.error:
                    console.print(f"  [red]{record.error}[/]", highlight=False, soft_wrap=True)

        records = run_cohort(jobs, model, shard=shard, summary=summary, on_record=show, **settings)
    if rank == 0:
        _print_table(records, summary)
    if any(record.status == "failed" for record in records):
        raise typer.Exit(EXIT_SCANS_FAILED)


def _print_table(records: Sequence[Any], summary: Path) -> None:
    """The summary table on stdout (every scan, or only the failed ones for long lists)."""
    from rich.table import Table

    counts = {
        status: sum(r.status == status for r in records) for status in ("done", "skipped", "failed")
    }
    shown = records if len(records) <= TABLE_ROWS else [r for r in records if r.status == "failed"]

    def detail(record: Any) -> str:
        if record.status == "failed":
            return record.error
        if record.note and record.output is None:  # skipped with nothing written
            return record.note
        return record.output

    if shown and output.is_terminal:
        table = Table("scan", "status", "seconds", "output or error")
        for record in shown:
            style = {"failed": "red", "skipped": "dim"}.get(record.status)
            table.add_row(
                record.scan, record.status, f"{record.seconds:.1f}", detail(record), style=style
            )
        output.print(table)
    else:  # logs and pipes: whole paths, one line per scan, for grep
        for record in shown:
            line = f"{record.status}\t{record.seconds:.1f} s\t{record.scan}\t{detail(record)}"
            output.print(line, markup=False, highlight=False, soft_wrap=True)
    not_thick = sum(r.status == "skipped" and r.output is None for r in records)
    skipped = f"{counts['skipped']} skipped" + (
        f" ({not_thick} not thick-slice)" if not_thick else " (already done)"
    )
    output.print(
        f"{counts['done']} done, {skipped}, {counts['failed']} failed; summary: {summary}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
