"""List the training recipes (networks, size and compute) and the bundled models.

For each recipe: its generator and discriminator and, for each network size
(small, full), the generator's parameter count and multiply-accumulates per
output voxel at --factor. Then the models shipped with this installation
(usable as `mrisr upscale --model NAME`): recipe, factor range, training stage
and validation metrics, from each file's own description.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mrisr.cli.common import console, output

NAME = "models"


def command(
    factor: Annotated[
        float, typer.Option(help="Thick-slice factor at which to count MACs per output voxel.")
    ] = 4.0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print {factor, recipes, bundled_models, weights_dir} on stdout."
        ),
    ] = False,
) -> None:
    import json

    from mrisr import models
    from mrisr.config import SIZES
    from mrisr.recipes import describe_recipes

    with console.status("building each recipe's generator to measure it"):
        recipes = describe_recipes(factor=factor)
    bundled = models.describe_bundled()

    if as_json:
        report = {
            "factor": factor,
            "recipes": recipes,
            "bundled_models": bundled,
            "weights_dir": str(models.WEIGHTS_DIR),
        }
        typer.echo(json.dumps(report, indent=2))
        return
    for table in _recipe_tables(recipes, SIZES, factor):
        output.print(table)
    if bundled:
        output.print(_bundled_table(bundled))
    else:
        output.print(
            f"No bundled models are installed (none in {models.WEIGHTS_DIR}): "
            "use --model cubic, or train one with `mrisr train` and pass its run folder."
        )


def _count(value: float) -> str:
    """4217040 -> '4.22 M'."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g} {suffix}"
    return f"{value:.3g}"


def _recipe_tables(
    recipes: list[dict[str, Any]], sizes: tuple[str, ...], factor: float
) -> tuple[Any, Any]:
    """(what each recipe is, its networks' size and compute): two tables that fit 80 columns."""
    from rich import box
    from rich.table import Table

    # Names never wrap or shrink (a truncated name cannot be typed back); titles wrap.
    about = Table(title="Training recipes (mrisr train --recipe NAME)", box=box.SIMPLE_HEAD)
    about.add_column("recipe", no_wrap=True)
    about.add_column("method")
    networks = Table(
        title=f"Generators by --size: parameters and MACs per output voxel at {factor:g}x",
        box=box.SIMPLE_HEAD,
    )
    networks.add_column("recipe", no_wrap=True)
    networks.add_column("generator", no_wrap=True)
    networks.add_column("discriminator", no_wrap=True)
    for size in sizes:
        networks.add_column(f"{size}\nparams", justify="right", no_wrap=True)
        networks.add_column(f"{size}\nMACs", justify="right", no_wrap=True)
    for row in recipes:
        about.add_row(row["name"], row["title"])
        cells = []
        for size in sizes:
            measured = row["sizes"][size]
            cells += [_count(measured["parameters"]), _count(measured["macs_per_output_voxel"])]
        networks.add_row(row["name"], row["generator"], row["discriminator"] or "-", *cells)
    return about, networks


def _validation_text(validation: dict[str, Any] | None) -> str:
    """{"psnr": 31.5, "psnr_cubic": 30.25, "ssim": 0.91, ...} -> 'PSNR 31.50 dB (cubic 30.25), ...'."""
    if not validation:
        return "-"
    parts = []
    for key, label, fmt, unit in (
        ("psnr", "PSNR", "{:.2f}", " dB"),
        ("ssim", "SSIM", "{:.3f}", ""),
    ):
        if isinstance(validation.get(key), (int, float)):
            text = f"{label} {fmt.format(validation[key])}{unit}"
            if isinstance(validation.get(f"{key}_cubic"), (int, float)):
                text += f" (cubic {fmt.format(validation[f'{key}_cubic'])})"
            parts.append(text)
    shown = {"psnr", "psnr_cubic", "ssim", "ssim_cubic", "psnr_gain"}
    parts += [
        f"{key} {value:.4g}" if isinstance(value, (int, float)) else f"{key} {value}"
        for key, value in validation.items()
        if key not in shown
    ]
    return ", ".join(parts)


def _bundled_table(bundled: list[dict[str, Any]]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title="Bundled models (mrisr upscale --model NAME)", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    table.add_column("recipe", no_wrap=True)
    table.add_column("factors", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("validation")
    for row in bundled:
        if "error" in row:
            table.add_row(row["name"], "-", "-", "-", f"[red]unreadable:[/] {row['error']}")
            continue
        low, high = row["factor_range"]
        recipe = row["recipe"] or row["generator"]
        # The parameter count, not the size name: a config may override the size's widths.
        if row.get("parameters"):
            recipe += f" ({_count(row['parameters'])} params)"
        stage = row["stage"] or "-"
        if row.get("step") is not None:
            stage += f", step {row['step']}"
        table.add_row(
            row["name"],
            recipe,
            f"{low:g}-{high:g}x",
            stage,
            _validation_text(row["validation"]),
        )
    return table
