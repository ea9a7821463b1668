"""What a new user meets: output size by ``--dtype``, and how soon bad options are refused.

Two tables, on the real thick-slice scans in ``../shared/data/thick``:

1. **Output size.** Each scan is upscaled once to isotropic voxels
   (``--model cubic``: the size does not depend on the model) and written as
   float32, int16 and uint8 NIfTI (``mrisr.io.save_volume`` with the storage
   ``mrisr upscale --dtype`` uses). Columns: input and output sizes in MB, and
   the largest difference from the float32 values in percent of the output's
   range (half the scale factor, at most).
2. **Checks before work.** ``mrisr upscale`` of the PD scan with bad options,
   in this process: seconds until the refusal, against a whole upscale of the
   same scan with the bundled ``fast`` model at 6x (the "work"). Each refusal
   must come in a small fraction of that time.

Run from the repository root (about 5 minutes on 2 shared cores, most of it
the one network upscale; timings are inflated by other load, the fractions
less so)::

    python benchmarks/new_user.py [--out docs/new_user.md] [--skip-flair]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from mrisr.cli import app
from mrisr.interpolation import CubicSliceModel
from mrisr.io import load_volume, save_volume
from mrisr.io.storage import choose_storage
from mrisr.upscale import upscale_volume

SHARED_DATA = Path(
    os.environ.get(
        "MRISR_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)
THICK = SHARED_DATA / "thick"
SCANS = [
    "spine_t2star_7.5mm.nii.gz",
    "brain_pd_axial_7mm.nii.gz",
    "brain_flair_axial_4.4mm.nii.gz",
]
DTYPES = ("float32", "int16", "uint8")


def sizes_table(folder: Path, skip_flair: bool) -> list[str]:
    rows = [
        "| scan | input MB | output shape | float32 MB | int16 MB | uint8 MB "
        "| int16 max error (% of range) | uint8 max error (% of range) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SCANS:
        if skip_flair and "flair" in name:
            continue
        path = THICK / name
        result = upscale_volume(load_volume(path), CubicSliceModel())
        reference = result.data.astype(np.float64)
        span = float(reference.max() - reference.min())
        sizes, errors = {}, {}
        for dtype in DTYPES:
            out = folder / f"{dtype}_{name}"
            save_volume(result, out, dtype=choose_storage(result.data, dtype, "nifti", out))
            sizes[dtype] = out.stat().st_size / 1e6
            errors[dtype] = float(np.abs(nib.load(out).get_fdata() - reference).max()) / span * 100
            out.unlink()
        shape = " x ".join(str(n) for n in result.shape)
        rows.append(
            f"| {name} | {path.stat().st_size / 1e6:.2f} | {shape} | {sizes['float32']:.1f} "
            f"| {sizes['int16']:.1f} | {sizes['uint8']:.1f} | {errors['int16']:.4f} "
            f"| {errors['uint8']:.3f} |"
        )
        print(rows[-1], flush=True)
    return rows


def timed(args: list[str]) -> tuple[float, int, str]:
    runner = CliRunner()
    start = time.perf_counter()
    result = runner.invoke(app, args)
    seconds = time.perf_counter() - start
    return seconds, result.exit_code, " ".join(result.output.split())


def refusals_table(folder: Path) -> list[str]:
    scan = folder / "pd.nii.gz"
    scan.write_bytes((THICK / "brain_pd_axial_7mm.nii.gz").read_bytes())
    work, code, _ = timed(
        ["upscale", str(scan), "--model", "fast", "--factor", "6", "-o", str(folder / "w.nii.gz")]
    )
    assert code == 0
    existing = folder / "pd_sr.nii.gz"
    existing.write_bytes(b"earlier result")
    cases = [
        ("existing output, default model", []),
        ("unknown model", ["--model", "nosuchmodel", "-o", str(folder / "a.nii.gz")]),
        ("no bundled model covers the factor", ["--factor", "20", "-o", str(folder / "a.nii.gz")]),
        (
            "factor outside the model's range",
            ["--model", "fast", "--factor", "9", "-o", str(folder / "a.nii.gz")],
        ),
        (
            "--thickness 12 with --consistency",
            ["--model", "fast", "--factor", "6", "--consistency", "--thickness", "12"]
            + ["-o", str(folder / "a.nii.gz")],
        ),
        (
            "--thickness 30 (over 3 x the spacing)",
            ["--model", "fast", "--factor", "6", "--thickness", "30"]
            + ["-o", str(folder / "a.nii.gz")],
        ),
        (
            "--dtype int16 to .mgz",
            ["--model", "fast", "--dtype", "int16", "-o", str(folder / "a.mgz")],
        ),
    ]
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = folder / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        cases.append(
            (
                "read-only output folder",
                ["--model", "fast", "--factor", "6", "-o", str(locked / "a.nii.gz")],
            )
        )
    rows = [
        f"Work: a whole `mrisr upscale` of brain_pd_axial_7mm with `--model fast --factor 6`: "
        f"{work:.1f} s (in process).",
        "",
        "| bad option | exit code | seconds to refusal | fraction of the work | message |",
        "|---|---|---|---|---|",
    ]
    for label, options in cases:
        seconds, code, message = timed(["upscale", str(scan), *options])
        message = message.replace(str(folder) + "/", "").replace("|", "\\|")
        rows.append(
            f"| {label} | {code} | {seconds:.2f} | {seconds / work:.1%} | {message[:160]} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the tables as a markdown page here")
    parser.add_argument("--skip-flair", action="store_true", help="skip the 512 x 512 x 32 FLAIR")
    args = parser.parse_args()
    if not THICK.is_dir():
        raise SystemExit(f"{THICK}: missing; expected the shared thick scans (see its README)")
    with tempfile.TemporaryDirectory() as tmp:
        sizes = sizes_table(Path(tmp), args.skip_flair)
        refusals = refusals_table(Path(tmp))
    page = [
        "# What a new user meets: output size and early refusals",
        "",
        "Generated by `python benchmarks/new_user.py --out docs/new_user.md`; timings on a",
        "shared 2-core machine (inflated by other load; the fractions are what matter).",
        "",
        "## Output size by `--dtype`",
        "",
        "Each scan upscaled to isotropic voxels (`--model cubic`) and written as NIfTI;",
        "integer types carry a scale factor chosen from the data's range (nothing clipped).",
        "",
        *sizes,
        "",
        "## Checks before work",
        "",
        *refusals,
        "",
    ]
    text = "\n".join(page)
    print(text)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
