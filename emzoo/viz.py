"""Pictures of a segmentation: the overlay users look at, the contact sheet, the prediction preview, the cover.

One picture is drawn everywhere (``emzoo benchmark``'s per-item overlays, ``emzoo predict --preview``, the demo's
``overlay.png``, the bioimage.io cover and the preset's model-card picture): the raw image in grey (robust percentile
scaling), the ground truth as an outline, and the errors filled semi-transparent, false positives and false
negatives in two colours of the Okabe-Ito palette, which stays distinguishable under the common colour-vision
deficiencies. Without ground truth the predicted mask is filled and outlined instead. Every file is written
atomically (:func:`emzoo.io.atomic.atomic_file`) with matplotlib's Agg backend, so no display is needed.

Examples
--------
>>> import numpy as np
>>> raw = np.arange(64, dtype=np.float32).reshape(8, 8)
>>> truth = np.zeros((8, 8), np.uint8); truth[2:6, 2:6] = 1
>>> prob = np.zeros((8, 8), np.float32); prob[2:6, 3:7] = 0.9
>>> rgb = overlay_rgb(raw, prob, truth, alpha=1.0)
>>> rgb.shape, rgb[3, 6].tolist(), rgb[3, 2].tolist()  # a false positive; the ground truth's outline
((8, 8, 3), [213, 94, 0], [240, 228, 66])
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "COLOURS", "Section", "grey", "overlay_rgb", "cover_image", "write_image", "write_overlay",
    "write_contact_sheet", "preview_sections", "write_preview", "legend_text",
]

#: RGB colours (Okabe & Ito, "Color Universal Design", 2008): the ground-truth outline, the two error fills and the
#: fill/outline of a prediction shown without ground truth.
COLOURS = {
    "truth": (240, 228, 66),  # yellow
    "false_positive": (213, 94, 0),  # vermillion
    "false_negative": (0, 114, 178),  # blue
    "prediction": (230, 159, 0),  # orange
}


def legend_text(with_truth: bool) -> str:
    """What the colours of :func:`overlay_rgb` mean, in one line (for captions and titles)."""
    if with_truth:
        return "ground truth: yellow outline; false positives: vermillion; false negatives: blue"
    return "prediction: orange fill and outline"


def _plane(data: Any, name: str) -> np.ndarray:
    array = np.asarray(data)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be one 2D image (Y, X), got shape {array.shape}; pass one slice or section "
                         "(e.g. volume[z]) and one channel.")
    return array


def grey(raw: Any, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """A 2D image as uint8 grey, scaled between two percentiles so a few extreme pixels do not wash it out.

    Examples
    --------
    >>> grey(np.array([[0.0, 1.0], [2.0, 3.0]]), (0, 100)).tolist()
    [[0, 85], [170, 255]]
    """
    image = _plane(raw, "raw").astype(np.float32)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = (float(v) for v in np.percentile(finite, percentiles))
    if hi <= lo:  # a nearly flat image: fall back to its full range
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    scaled = np.clip((np.nan_to_num(image, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def _mask(data: Any, threshold: float, name: str) -> np.ndarray:
    """Foreground of a probability map (``prob > threshold``), a binary mask or a label image (``> 0``)."""
    from emzoo.metrics import binarize

    array = _plane(data, name)
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return array > 0  # masks and object labels: every non-zero pixel is foreground
    try:
        return binarize(array, threshold)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The inner boundary of ``mask``, ``width`` pixels thick (the image border does not count as a boundary)."""
    from scipy.ndimage import binary_erosion

    if not mask.any():
        return mask
    return mask & ~binary_erosion(mask, iterations=width, border_value=1)


def _paint(rgb: np.ndarray, where: np.ndarray, colour: tuple[int, int, int], alpha: float) -> None:
    rgb[where] = np.round((1 - alpha) * rgb[where] + alpha * np.asarray(colour, np.float32))


def overlay_rgb(raw: Any, prob_or_mask: Any, labels: Any = None, *, threshold: float = 0.5, alpha: float = 0.45,
                contour_width: int | None = None) -> np.ndarray:
    """The overlay of one 2D image: raw in grey, ground-truth outline, false positives and negatives filled.

    Parameters
    ----------
    raw : array_like, shape (Y, X)
        The image, any numeric dtype (shown between its 0.5th and 99.5th percentiles).
    prob_or_mask : array_like, shape (Y, X)
        Foreground probabilities in [0, 1] (foreground is ``prob > threshold``, :func:`emzoo.metrics.binarize`),
        or a binary mask / object labels (foreground is non-zero).
    labels : array_like, shape (Y, X), optional
        Ground truth (foreground is non-zero). Without it the prediction is filled and outlined in orange.
    threshold : float
        Binarisation of probabilities.
    alpha : float
        Opacity of the filled areas, in (0, 1].
    contour_width : int, optional
        Outline thickness in pixels; default one pixel per 512 pixels of the longer side (at least one).

    Returns
    -------
    numpy.ndarray
        ``(Y, X, 3)`` uint8 RGB: false positives vermillion, false negatives blue, the ground truth outlined in
        yellow (:data:`COLOURS`); true positives and negatives keep the raw grey.

    Raises
    ------
    ValueError
        Inputs that are not 2D, shapes that differ, probabilities outside [0, 1], ``alpha`` outside (0, 1].

    Examples
    --------
    >>> raw = np.zeros((8, 8)); truth = np.zeros((8, 8), np.uint8); truth[1:7, 1:7] = 1
    >>> pred = np.zeros((8, 8)); pred[1:7, 3:8] = 0.9
    >>> rgb = overlay_rgb(raw, pred, truth, alpha=1.0)
    >>> rgb[3, 7].tolist(), rgb[3, 2].tolist(), rgb[1, 4].tolist(), rgb[0, 0].tolist()  # FP, FN, outline, TN
    ([213, 94, 0], [0, 114, 178], [240, 228, 66], [0, 0, 0])
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}.")
    image = grey(raw)
    pred = _mask(prob_or_mask, threshold, "prob_or_mask")
    if pred.shape != image.shape:
        raise ValueError(f"prob_or_mask has shape {pred.shape} but raw has {image.shape}; pass the same section of "
                         "both.")
    width = contour_width if contour_width is not None else max(1, round(max(image.shape) / 512))
    rgb = np.repeat(image[..., None], 3, axis=-1).astype(np.float32)
    if labels is None:
        _paint(rgb, pred, COLOURS["prediction"], alpha * 0.75)
        rgb[_outline(pred, width)] = COLOURS["prediction"]
        return rgb.astype(np.uint8)
    truth = _plane(labels, "labels") > 0
    if truth.shape != image.shape:
        raise ValueError(f"labels have shape {truth.shape} but raw has {image.shape}; pass the same section of both.")
    _paint(rgb, pred & ~truth, COLOURS["false_positive"], alpha)
    _paint(rgb, truth & ~pred, COLOURS["false_negative"], alpha)
    rgb[_outline(truth, width)] = COLOURS["truth"]
    return rgb.astype(np.uint8)


def cover_image(raw: Any, prob_or_mask: Any, labels: Any = None, *, threshold: float = 0.5) -> np.ndarray:
    """The cover picture: the raw image and its :func:`overlay_rgb` side by side (a 2:1 image for a square input).

    This is the bioimage.io cover (:mod:`emzoo.exporters.bioimageio`) and the model card's picture
    (:func:`emzoo.hub.save.save_preset` with ``cover=``).

    Examples
    --------
    >>> cover_image(np.zeros((8, 8)), np.zeros((8, 8))).shape
    (8, 16, 3)
    """
    overlay = overlay_rgb(raw, prob_or_mask, labels, threshold=threshold)
    plain = np.repeat(grey(raw)[..., None], 3, axis=-1)
    return np.concatenate([plain, overlay], axis=1)


def _figure_png(fig: Any, path: str | os.PathLike[str], dpi: float) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from emzoo.io.atomic import atomic_file

    target = Path(path)
    try:
        with atomic_file(target) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return target


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a backend the user chose already stays
    import matplotlib.pyplot as plt

    return plt


def write_image(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an ``(Y, X, 3)`` uint8 RGB array as a PNG of exactly that size, atomically.

    Examples
    --------
    >>> write_image(tmp / "cover.png", cover_image(np.zeros((8, 8)), np.zeros((8, 8))))  # doctest: +SKIP
    """
    from matplotlib.image import imsave

    from emzoo.io.atomic import atomic_file

    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"rgb must be a (Y, X, 3) uint8 array, got shape {array.shape} and dtype {array.dtype}.")
    target = Path(path)
    with atomic_file(target) as tmp:
        imsave(tmp, array, format="png")
    return target


def _score_lines(scores: Mapping[str, float] | str | None) -> list[str]:
    if scores is None:
        return []
    if isinstance(scores, str):
        return scores.splitlines()
    names = {"f1": "F1", "jaccard": "Jaccard", "ppv": "precision", "sensitivity": "recall", "vrand": "VRand",
             "vinfo": "VInfo"}
    cells = [f"{names.get(k, k)} {'-' if v is None or math.isnan(v) else f'{v:.3f}'}" for k, v in scores.items()]
    return ["  ".join(cells[i:i + 2]) for i in range(0, len(cells), 2)]


def write_overlay(path: str | os.PathLike[str], raw: Any, prob_or_mask: Any, labels: Any = None, *,
                  scores: Mapping[str, float] | str | None = None, title: str | None = None, threshold: float = 0.5,
                  max_side: int = 2048) -> Path:
    """Write :func:`overlay_rgb` as a PNG at the image's own resolution, with a title and scores in the top-left corner.

    Parameters
    ----------
    path : path-like
        The PNG to write (atomically).
    raw, prob_or_mask, labels, threshold
        As in :func:`overlay_rgb`.
    scores : dict or str, optional
        The item's scores (``{"f1": 0.91, "jaccard": 0.84}``, printed to 3 decimals) or a text.
    title : str, optional
        First line of the corner text (e.g. the model and the item).
    max_side : int
        Images whose longer side exceeds this are subsampled (every n-th pixel) to keep the file small.

    Returns
    -------
    Path
        ``path``; the PNG is ``(ceil(Y / n), ceil(X / n))`` pixels, ``n = ceil(max(Y, X) / max_side)``.

    Examples
    --------
    >>> write_overlay(tmp / "a.png", raw, prob, truth, scores={"f1": 0.9}, title="unet, slice 0")  # doctest: +SKIP
    """
    image = _plane(raw, "raw")
    step = max(1, math.ceil(max(image.shape) / max_side))
    cut = (slice(None, None, step),) * 2
    rgb = overlay_rgb(image[cut], np.asarray(prob_or_mask)[cut], None if labels is None else np.asarray(labels)[cut],
                      threshold=threshold)
    plt = _pyplot()
    dpi = 100
    height, width = rgb.shape[:2]
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    text = "\n".join([*([title] if title else []), *_score_lines(scores)])
    if text:
        # Font in points at 100 dpi: about 1/48 of the shorter side, readable from 256 px up.
        size = max(5.0, min(14.0, min(height, width) / 48))
        ax.text(0.01, 0.99, text, transform=ax.transAxes, ha="left", va="top", fontsize=size, family="monospace",
                color="white", bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 2})
    return _figure_png(fig, path, dpi)


def _image(item: Any) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        from matplotlib.image import imread

        return imread(os.fspath(item))
    return np.asarray(item)


def write_contact_sheet(images: Sequence[Any], path: str | os.PathLike[str], *,
                        titles: Sequence[str] | None = None, ncols: int | None = None,
                        panel_inches: float = 3.0) -> Path:
    """Write several pictures as one grid (PNG, atomically), each with its title.

    Parameters
    ----------
    images : sequence
        PNG paths or RGB(A) / grey arrays, filled into the grid row by row.
    path : path-like
        The PNG to write.
    titles : sequence of str, optional
        One title per image.
    ncols : int, optional
        Columns of the grid (default: about the square root of the count); ``emzoo benchmark`` uses one row per
        model and one column per test item.
    panel_inches : float
        Width of one panel (at 100 dpi).

    Returns
    -------
    Path

    Examples
    --------
    >>> write_contact_sheet([np.zeros((8, 8, 3))] * 4, tmp / "sheet.png", ncols=2)  # doctest: +SKIP
    """
    images = list(images)
    if not images:
        raise ValueError("write_contact_sheet needs at least one image; got an empty list.")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles has {len(titles)} entries for {len(images)} images; give one title per image.")
    columns = ncols or math.ceil(math.sqrt(len(images)))
    if columns < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols!r}.")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    arrays = [_image(item) for item in images]
    aspect = max(a.shape[0] / a.shape[1] for a in arrays)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, columns, squeeze=False,
                             figsize=(panel_inches * columns, (panel_inches * aspect + 0.3) * rows))
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index >= len(arrays):
            continue
        ax.imshow(arrays[index], cmap="gray" if arrays[index].ndim == 2 else None, interpolation="antialiased")
        if titles is not None:
            ax.set_title(titles[index], fontsize=8)
    fig.tight_layout(pad=0.3)
    return _figure_png(fig, path, 100)


class Section(NamedTuple):
    """One mid-section of a volume and its prediction, as drawn by :func:`write_preview`."""

    name: str  # "XY", "XZ" or "YZ"
    index: str  # where it was cut, e.g. "z=12"
    raw: np.ndarray
    prob: np.ndarray
    aspect: float  # pixel height / width on screen (anisotropic voxels)


def _read(array: Any, key: tuple[Any, ...]) -> np.ndarray:
    """``array[key]`` as numpy; for dask and Zarr only the chunks the section crosses are read."""
    part = array[key]
    compute = getattr(part, "compute", None)
    return np.asarray(compute() if callable(compute) else part)


def preview_sections(volume: Any, prob: Any, *, voxel_size: Sequence[float] | None = None) -> list[Section]:
    """The mid-sections of an image or volume and of its prediction: XY, plus XZ and YZ for a volume.

    Parameters
    ----------
    volume : array_like, shape (Y, X) or (Z, Y, X)
        The input (numpy, dask or Zarr: sections are read lazily, never the whole array).
    prob : array_like
        The foreground probabilities, mask or object labels, same shape as ``volume``.
    voxel_size : sequence of float, optional
        Voxel size per axis, z first (as :class:`emzoo.io.Volume` gives it): anisotropic sections are drawn with
        the right aspect.

    Returns
    -------
    list of Section
        One for a 2D image, three (XY at the middle z, XZ at the middle y, YZ at the middle x) for a volume.

    Examples
    --------
    >>> [s.name for s in preview_sections(np.zeros((4, 8, 8)), np.zeros((4, 8, 8)), voxel_size=(40, 5, 5))]
    ['XY', 'XZ', 'YZ']
    >>> preview_sections(np.zeros((4, 8, 8)), np.zeros((4, 8, 8)), voxel_size=(40, 5, 5))[1].aspect
    8.0
    """
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"volume must be (Y, X) or (Z, Y, X), got shape {shape}; pass one channel.")
    if tuple(int(s) for s in prob.shape) != shape:
        raise ValueError(f"prob has shape {tuple(prob.shape)} but volume {shape}; pass the foreground map (no "
                         "class axis) of the same voxels.")
    size = tuple(float(v) for v in voxel_size) if voxel_size else (1.0,) * len(shape)
    if len(size) != len(shape) or min(size) <= 0:
        raise ValueError(f"voxel_size must give one positive size per axis of {shape}, got {voxel_size!r}.")
    if len(shape) == 2:
        return [Section("XY", "", _read(volume, (slice(None),) * 2), _read(prob, (slice(None),) * 2),
                        size[0] / size[1])]
    z, y, x = (s // 2 for s in shape)
    cuts = [("XY", f"z={z}", (z, slice(None), slice(None)), size[1] / size[2]),
            ("XZ", f"y={y}", (slice(None), y, slice(None)), size[0] / size[2]),
            ("YZ", f"x={x}", (slice(None), slice(None), x), size[0] / size[1])]
    return [Section(name, where, _read(volume, key), _read(prob, key), aspect) for name, where, key, aspect in cuts]


def write_preview(path: str | os.PathLike[str], volume: Any, prob: Any, *, voxel_size: Sequence[float] | None = None,
                  threshold: float = 0.5, title: str | None = None) -> Path:
    """Write the mid-sections of :func:`preview_sections` with the prediction overlaid (PNG, atomically).

    Examples
    --------
    >>> write_preview(tmp / "p.png", np.zeros((4, 8, 8)), np.zeros((4, 8, 8)))  # doctest: +SKIP
    """
    sections = preview_sections(volume, prob, voxel_size=voxel_size)
    pictures = [overlay_rgb(s.raw, s.prob, threshold=threshold) for s in sections]
    plt = _pyplot()
    # Panel widths in proportion to their sections' widths, heights to height * aspect.
    heights = [p.shape[0] * s.aspect for p, s in zip(pictures, sections, strict=True)]
    widths = [p.shape[1] for p in pictures]
    scale = 6.0 / max(max(widths), max(heights))
    fig, axes = plt.subplots(1, len(pictures), squeeze=False, gridspec_kw={"width_ratios": widths},
                             figsize=(max(3.0, scale * sum(widths) + 0.4), scale * max(heights) + 0.9))
    for ax, picture, section in zip(axes[0], pictures, sections, strict=True):
        ax.imshow(picture, aspect=section.aspect, interpolation="antialiased")
        ax.set_title(f"{section.name} {section.index}".strip(), fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{title + ': ' if title else ''}{legend_text(False)}", fontsize=9)
    fig.tight_layout()
    return _figure_png(fig, path, 120)
