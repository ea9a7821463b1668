"""Image-quality metrics between a super-resolved volume and its ground truth.

Every metric is computed in float64 and compares ``result`` with
``reference`` (the truth), optionally only inside a boolean foreground mask:

* **PSNR** (dB): ``10 log10(L**2 / MSE)`` with a *fixed* intensity range
  ``L`` (``data_range``); ``inf`` for identical volumes.
* **SSIM** (3D, Wang et al. 2004): Gaussian window of 11 voxels per axis,
  sigma 1.5 voxels, ``C1 = (0.01 L)**2``, ``C2 = (0.03 L)**2``; the SSIM map
  is computed where the whole window fits inside the volume (no padding) and
  averaged over the mask voxels that lie there.
* **HFEN** (Ravishankar & Bresler 2011): ``||LoG(result - reference)|| /
  ||LoG(reference)||`` with a 3D Laplacian-of-Gaussian of sigma 1.5 voxels;
  0 for identical volumes.
* **NRMSE**: ``||result - reference|| / ||reference||`` (scikit-image's
  "euclidean" normalisation; the range-normalised RMSE would only repeat PSNR,
  since ``PSNR = -20 log10(RMSE / L)``).

Fixed range: 8- and 16-bit MRI has no natural peak value, and taking each
result's own maximum would reward a method for producing outliers. So ``L``
is given, or taken once from the reference: its 99.9th percentile minus its
minimum (:func:`reference_range`), which ignores a few hot voxels; values are
not clipped to it. Comparing several methods against one truth therefore uses
the same ``L`` for all of them.

PSNR and SSIM use the same definitions and constants as MONAI's
``PSNRMetric(max_val=L)`` and ``SSIMMetric(spatial_dims=3, data_range=L)``
(the tests check that they agree), but are computed here with NumPy/SciPy:
MONAI's SSIM runs in float32, cannot take a mask, and uses a dense 11x11x11
convolution about 8x slower than the separable filters below; importing torch
and MONAI also costs seconds per command for what is a few lines of maths.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from mrisr.errors import ConfigError, InputError

#: Keys of :func:`compare_volumes`' result, in table order.
METRICS: tuple[str, ...] = ("psnr", "ssim", "hfen", "nrmse")

#: Percentile of the reference taken as the top of the fixed intensity range.
RANGE_PERCENTILE = 99.9
#: SSIM Gaussian window: size (voxels per axis) and sigma (voxels), as Wang et al.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: HFEN Laplacian-of-Gaussian sigma (voxels), as Ravishankar & Bresler 2011.
HFEN_SIGMA = 1.5
#: Their 15-tap kernel: radius 7 voxels.
HFEN_RADIUS = 7


def _voxels(volume: Any) -> np.ndarray:
    """float64 voxels of an array or of a :class:`mrisr.volume.Volume` (anything with ``.data``)."""
    data = volume.data if hasattr(volume, "data") and not isinstance(volume, np.ndarray) else volume
    return np.asarray(data, dtype=np.float64)


def _pair(result: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both volumes as float64 arrays, checked to be finite and of the same shape."""
    x, y = _voxels(result), _voxels(reference)
    if x.shape != y.shape:
        raise InputError(
            f"cannot compare volumes of shapes {x.shape} (result) and {y.shape} (reference)",
            expected="the result on the reference's grid",
            fix="upscale to the reference's grid (see mrisr.evaluation, which crops to match)",
        )
    if x.size == 0:
        raise InputError(
            "cannot compare empty volumes",
            expected="at least one voxel",
            fix="pass the result and the reference as (X, Y, Z) volumes with voxels",
        )
    for name, data in (("result", x), ("reference", y)):
        if not np.isfinite(data).all():
            raise InputError(
                f"the {name} holds {int((~np.isfinite(data)).sum())} NaN or infinite voxels",
                expected="finite intensities",
                fix="check the model's output and the input file",
            )
    return x, y


def _check_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """``mask`` as a bool array of ``shape`` with at least one voxel, or None."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise InputError(
            f"mask of shape {mask.shape} does not match the volumes' shape {shape}",
            expected="a boolean mask on the reference's grid",
            fix="compute it from the reference, e.g. with foreground_mask(reference)",
        )
    mask = mask.astype(bool)
    if not mask.any():
        raise InputError(
            "the mask holds no voxel",
            expected="a mask with some foreground",
            fix="lower the threshold, or compare without a mask",
        )
    return mask


def reference_range(reference: Any, percentile: float = RANGE_PERCENTILE) -> float:
    """The fixed intensity range ``L`` taken from a reference volume.

    Args:
        reference: (X, Y, Z) ground-truth voxels (array or Volume), any units.
        percentile: the top of the range, as a percentile of all voxels.

    Returns:
        ``percentile(reference) - min(reference)`` in the reference's units;
        the whole volume is used (not a mask), so masked and unmasked metrics
        share the same range.

    Raises:
        InputError: the reference is (robustly) constant.
    """
    y = _voxels(reference)
    low = float(y.min())
    span = float(np.percentile(y, percentile)) - low
    if not span > 0:
        # Mostly-constant images (a tiny bright object) still have a range.
        span = float(y.max()) - low
    if not span > 0:
        raise InputError(
            f"the reference is constant ({low:g}), so it has no intensity range",
            expected="an image with some contrast",
            fix="pass data_range explicitly, or check the reference volume",
        )
    return span


def _range(reference: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        return reference_range(reference)
    if not (math.isfinite(data_range) and data_range > 0):
        raise ConfigError(
            f"data_range must be a positive number, got {data_range}",
            fix="pass the reference's intensity span (> 0), or data_range=None to take it "
            "from the reference",
        )
    return float(data_range)


def foreground_mask(reference: Any, *, fraction: float = 0.1, dilation: int = 2) -> np.ndarray:
    """Where the anatomy is: a threshold at a fraction of the robust maximum, filled, dilated.

    ``threshold = min + fraction * L`` with ``L`` from :func:`reference_range`
    (99.9th percentile minus minimum). Holes inside the head or spine (dark
    CSF, vessels) are filled, then the mask grows by a ball of radius
    ``dilation`` voxels so that the edges of the anatomy, where upsampling
    errors are largest, count too.

    Args:
        reference: (X, Y, Z) ground-truth voxels (array or Volume).
        fraction: threshold as a fraction of the intensity range, in [0, 1).
        dilation: voxels to grow the mask by (>= 0).

    Returns:
        (X, Y, Z) bool array.

    Raises:
        InputError: nothing lies above the threshold.
    """
    if not 0 <= fraction < 1:
        raise ConfigError(
            f"fraction must be in [0, 1), got {fraction}",
            fix="pass e.g. fraction=0.1 (the default)",
        )
    if dilation < 0:
        raise ConfigError(
            f"dilation must be >= 0 voxels, got {dilation}",
            fix="pass e.g. dilation=2 (the default), or 0 for none",
        )
    y = _voxels(reference)
    mask = y > float(y.min()) + fraction * reference_range(y)
    if not mask.any():
        raise InputError(
            f"no voxel lies above {fraction:g} of the intensity range",
            expected="a reference image with some foreground",
            fix="lower the fraction, or compare without a mask",
        )
    mask = ndimage.binary_fill_holes(mask)
    if dilation:
        offsets = np.indices((2 * dilation + 1,) * mask.ndim) - dilation
        ball = (offsets**2).sum(axis=0) <= dilation**2
        mask = ndimage.binary_dilation(mask, structure=ball)
    return mask


def psnr(
    result: Any,
    reference: Any,
    *,
    data_range: float | None = None,
    mask: np.ndarray | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB on a fixed intensity range.

    Args:
        result: (X, Y, Z) voxels to judge (array or Volume).
        reference: (X, Y, Z) ground truth, same shape.
        data_range: ``L``; default :func:`reference_range` of ``reference``.
        mask: (X, Y, Z) bool; only these voxels count. Default: all.

    Returns:
        ``10 log10(L**2 / MSE)``, ``inf`` when the volumes are equal (in the mask).
    """
    x, y = _pair(result, reference)
    span = _range(y, data_range)
    mask = _check_mask(mask, y.shape)
    error = (x - y) if mask is None else (x[mask] - y[mask])
    mse = float(np.mean(error * error))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(span * span / mse)


def nrmse(result: Any, reference: Any, *, mask: np.ndarray | None = None) -> float:
    """Normalised root-mean-square error ``||result - reference|| / ||reference||``.

    Args:
        result: (X, Y, Z) voxels to judge (array or Volume).
        reference: (X, Y, Z) ground truth, same shape.
        mask: (X, Y, Z) bool; only these voxels count. Default: all.

    Returns:
        A unitless ratio >= 0; 0 for equal volumes.

    Raises:
        InputError: the reference is zero everywhere (in the mask).
    """
    x, y = _pair(result, reference)
    mask = _check_mask(mask, y.shape)
    return _relative_norm(x - y, y, mask, "the reference is zero", "NRMSE")


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The 1D SSIM window: ``size`` samples of a Gaussian, summing to 1 (as MONAI's)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _local_mean(data: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable weighted mean over every full window: each axis shrinks by ``len(window) - 1``."""
    radius = (len(window) - 1) // 2
    for axis in range(data.ndim):
        # Only outputs whose window lies inside the volume are kept, so the
        # boundary mode never matters; cropping after each axis saves work.
        data = ndimage.correlate1d(data, window, axis=axis, mode="nearest")
        if radius:
            data = np.take(data, np.arange(radius, data.shape[axis] - radius), axis=axis)
    return data


def ssim_map(
    result: Any,
    reference: Any,
    *,
    data_range: float | None = None,
    win_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> np.ndarray:
    """Local SSIM at every voxel whose whole window lies inside the volume.

    Args:
        result: (X, Y, Z) voxels to judge (array or Volume).
        reference: (X, Y, Z) ground truth, same shape.
        data_range: ``L``; default :func:`reference_range` of ``reference``.
        win_size: Gaussian window size in voxels along every axis (odd).
        sigma: Gaussian window sigma in voxels.
        k1: luminance constant, ``C1 = (k1 L)**2``.
        k2: contrast constant, ``C2 = (k2 L)**2``.

    Returns:
        (X - w + 1, Y - w + 1, Z - w + 1) float64 map; entry ``[i, j, k]``
        belongs to voxel ``[i + r, j + r, k + r]`` with ``r = (w - 1) // 2``.

    Raises:
        ConfigError: an even or too small window.
        InputError: a volume smaller than the window.
    """
    x, y = _pair(result, reference)
    span = _range(y, data_range)
    if win_size < 1 or win_size % 2 == 0:
        raise ConfigError(
            f"SSIM window must be an odd number of voxels, got {win_size}",
            fix=f"pass an odd win_size >= 1, e.g. {SSIM_WINDOW} (the default) or 7",
        )
    if min(y.shape) < win_size:
        raise InputError(
            f"volume of shape {y.shape} is smaller than the {win_size}-voxel SSIM window",
            expected=f"at least {win_size} voxels along every axis",
            fix="compare larger volumes, or pass a smaller win_size",
        )
    window = gaussian_window(win_size, sigma)
    mu_x, mu_y = _local_mean(x, window), _local_mean(y, window)
    var_x = _local_mean(x * x, window) - mu_x * mu_x
    var_y = _local_mean(y * y, window) - mu_y * mu_y
    cov = _local_mean(x * y, window) - mu_x * mu_y
    c1, c2 = (k1 * span) ** 2, (k2 * span) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )


def ssim(
    result: Any,
    reference: Any,
    *,
    data_range: float | None = None,
    mask: np.ndarray | None = None,
    win_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> float:
    """Mean 3D structural similarity, inside ``mask`` where given.

    Uses :func:`ssim_map` (Gaussian window ``win_size`` voxels, sigma
    ``sigma`` voxels, ``C1 = (0.01 L)**2``, ``C2 = (0.03 L)**2``) and averages
    it over the mask voxels whose window lies inside the volume.

    Args:
        result: (X, Y, Z) voxels to judge (array or Volume).
        reference: (X, Y, Z) ground truth, same shape.
        data_range: ``L``; default :func:`reference_range` of ``reference``.
        mask: (X, Y, Z) bool; only these voxels count. Default: all.
        win_size: window size in voxels (odd).
        sigma: window sigma in voxels.

    Returns:
        Mean SSIM, at most 1 (1 for equal volumes).

    Raises:
        InputError: volumes of different shapes, a mask of another shape, or a
            mask lying entirely where the window does not fit.
    """
    x, y = _pair(result, reference)
    mask = _check_mask(mask, y.shape)
    local = ssim_map(x, y, data_range=data_range, win_size=win_size, sigma=sigma)
    if mask is None:
        return float(local.mean())
    radius = (win_size - 1) // 2
    inner = mask[tuple(slice(radius, n - radius) for n in mask.shape)]
    if not inner.any():
        raise InputError(
            f"the mask lies entirely within {radius} voxels of the volume's edge, "
            "where the SSIM window does not fit",
            fix="compare without a mask, or with a larger one",
        )
    return float(local[inner].mean())


def laplacian_of_gaussian(data: np.ndarray, sigma: float = HFEN_SIGMA) -> np.ndarray:
    """3D Laplacian of Gaussian with a zero-sum kernel, so constant offsets give exactly 0.

    Separable: the sum over axes of the second-derivative kernel along that
    axis times the Gaussian along the others. Kernels have ``2 * 7 + 1``
    taps; the Gaussian sums to 1 and the second derivative is shifted to sum
    to 0, as MATLAB's ``fspecial('log')`` does (SciPy's ``gaussian_laplace``
    does not, so it would count a constant offset as high-frequency error).
    Edges are mirrored (half-sample symmetric).

    Args:
        data: (X, Y, Z) float64 voxels.
        sigma: Gaussian sigma in voxels.

    Returns:
        (X, Y, Z) float64 filtered voxels, in intensity units per voxel**2.
    """
    offsets = np.arange(-HFEN_RADIUS, HFEN_RADIUS + 1, dtype=np.float64)
    gauss = np.exp(-0.5 * (offsets / sigma) ** 2)
    gauss /= gauss.sum()
    second = gauss * (offsets**2 - sigma**2) / sigma**4
    second -= second.mean()
    total = np.zeros_like(data, dtype=np.float64)
    for derivative_axis in range(data.ndim):
        filtered = np.asarray(data, dtype=np.float64)
        for axis in range(data.ndim):
            kernel = second if axis == derivative_axis else gauss
            filtered = ndimage.correlate1d(filtered, kernel, axis=axis, mode="reflect")
        total += filtered
    return total


def hfen(
    result: Any,
    reference: Any,
    *,
    mask: np.ndarray | None = None,
    sigma: float = HFEN_SIGMA,
) -> float:
    """High-frequency error norm: relative error of Laplacian-of-Gaussian filtered volumes.

    ``||LoG(result - reference)|| / ||LoG(reference)||`` (LoG is linear), with
    the 3D :func:`laplacian_of_gaussian` of ``sigma`` voxels (15 taps per axis,
    as Ravishankar & Bresler 2011). The filters run on the whole volume; the
    norms sum over the mask.

    Args:
        result: (X, Y, Z) voxels to judge (array or Volume).
        reference: (X, Y, Z) ground truth, same shape.
        mask: (X, Y, Z) bool; only these voxels count. Default: all.
        sigma: LoG sigma in voxels.

    Returns:
        A unitless ratio >= 0; 0 for equal volumes.

    Raises:
        InputError: the reference has no edges at all (LoG is zero).
    """
    x, y = _pair(result, reference)
    mask = _check_mask(mask, y.shape)
    error = laplacian_of_gaussian(x - y, sigma)
    edges = laplacian_of_gaussian(y, sigma)
    return _relative_norm(error, edges, mask, "the reference has no edges", "HFEN")


def _relative_norm(
    error: np.ndarray, reference: np.ndarray, mask: np.ndarray | None, zero: str, name: str
) -> float:
    """``||error|| / ||reference||`` over ``mask``; refuses a zero reference (``zero``, ``name``)."""
    if mask is not None:
        error, reference = error[mask], reference[mask]
    norm = float(np.linalg.norm(reference))
    if norm == 0.0:
        raise InputError(
            f"{zero} everywhere it is compared, so {name} is undefined",
            fix="compare inside a foreground mask, or check the reference",
        )
    return float(np.linalg.norm(error)) / norm


def compare_volumes(
    result: Any,
    reference: Any,
    mask: np.ndarray | None = None,
    *,
    data_range: float | None = None,
) -> dict[str, float]:
    """All four metrics of ``result`` against ``reference``, on one fixed range.

    Args:
        result: (X, Y, Z) voxels to judge (array or Volume).
        reference: (X, Y, Z) ground truth, same shape.
        mask: (X, Y, Z) bool; only these voxels count (e.g.
            :func:`foreground_mask` of the reference). Default: all voxels.
        data_range: ``L`` for PSNR and SSIM; default :func:`reference_range`.

    Returns:
        ``{"psnr": dB, "ssim": ..., "hfen": ..., "nrmse": ...}`` as Python floats.
    """
    x, y = _pair(result, reference)
    span = _range(y, data_range)
    return {
        "psnr": psnr(x, y, data_range=span, mask=mask),
        "ssim": ssim(x, y, data_range=span, mask=mask),
        "hfen": hfen(x, y, mask=mask),
        "nrmse": nrmse(x, y, mask=mask),
    }
