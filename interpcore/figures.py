"""Shared matplotlib figures for method reports: bars, heatmap overlays, image grids, curves.

Everything here builds :class:`matplotlib.figure.Figure` objects directly (no ``pyplot``, no
global state, no GUI backend: safe on a headless server and in threads) and saves them with
:func:`save_figure` as PNG (and SVG on request) with ``bbox_inches="tight"``, written
atomically. Long labels are wrapped and shortened so that nothing overlaps, and figure sizes
grow with the number of items.

matplotlib is imported inside the functions, so importing this module is cheap.

Typical use in a method command::

    from interpcore import figures
    fig = figures.bar_chart(words, weights, title="Concepts of cat.png", xlabel="weight")
    figures.save_figure(fig, out_dir / "concepts.png", svg=want_svg)
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import InterpError

FONT_SIZE = 10
TITLE_SIZE = 12
DPI = 110


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def wrap_label(text, width: int = 28, max_lines: int = 2) -> str:
    """Wrap ``text`` to lines of at most ``width`` characters, at most ``max_lines`` lines
    (the last one ends in an ellipsis when text was cut)."""
    text = " ".join(str(text).split())
    lines = textwrap.wrap(text, width=width, break_long_words=True) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        lines[-1] = (last[: width - 1] if len(last) >= width else last) + "…"
    return "\n".join(lines)


def new_figure(width: float, height: float, **kwargs):
    """A figure of ``width`` x ``height`` inches with constrained layout, without pyplot."""
    from matplotlib.figure import Figure

    kwargs.setdefault("layout", "constrained")
    return Figure(figsize=(max(width, 1.0), max(height, 1.0)), dpi=DPI, **kwargs)


def save_figure(fig, path: str | os.PathLike, *, svg: bool = False, dpi: int | None = None) -> list[Path]:
    """Save ``fig`` as ``path`` (PNG; the suffix is set to .png) and, with ``svg``, a matching
    .svg next to it. Files are written atomically. Returns the written paths (PNG first)."""
    from .cache import atomic_path

    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    written = []
    for target, fmt in [(path, "png")] + ([(path.with_suffix(".svg"), "svg")] if svg else []):
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi or fig.dpi, bbox_inches="tight",
                        facecolor="white", metadata={"Software": "interpcore"} if fmt == "png" else None)
        make_readable(target)
        written.append(target)
    return written


def make_readable(path) -> None:
    """Give a file written through a temporary file the usual permissions (0644 under the
    common umask) instead of mkstemp's 0600, so run folders can be shared or served."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o666 & ~umask)
    except OSError:
        pass


def to_rgb_array(image):
    """An (H, W, 3) float array in [0, 1] from a PIL image, a path, an (H, W[, 3]) array or a
    (3, H, W) / (H, W, 3) tensor."""
    import numpy as np

    if isinstance(image, (str, os.PathLike)):
        from .torch_backbone import load_image  # noqa: PLC0415 - only for paths

        image = load_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise InterpError(f"expected an image of shape (H, W, 3) or (3, H, W), got {tuple(arr.shape)}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.max() > 1.0 + 1e-6:
        arr = arr / 255.0
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6:  # a normalized tensor: rescale for display
        arr = (arr - lo) / max(hi - lo, 1e-12)
    return np.clip(arr, 0.0, 1.0)


def resize_map(heatmap, height: int, width: int):
    """Bilinearly resize a 2-D map to (height, width) (a patch grid onto its image)."""
    import numpy as np
    from PIL import Image

    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().float().cpu().numpy()
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.ndim != 2:
        raise InterpError(f"a heatmap must be 2-D (rows, cols), got shape {tuple(hm.shape)}")
    if hm.shape == (height, width):
        return hm
    return np.asarray(Image.fromarray(hm, mode="F").resize((width, height), Image.BILINEAR))


# --------------------------------------------------------------------------------------
# Bars and curves
# --------------------------------------------------------------------------------------


def bar_chart(labels: Sequence, values: Sequence[float], *, title: str = "", xlabel: str = "",
              topk: int | None = None, color: str = "#3b6fb6", sort: bool = True,
              label_width: int = 30, value_format: str = "{:.3g}"):
    """Horizontal bars, largest on top, with the value printed at the end of each bar."""
    import numpy as np

    labels = [str(x) for x in labels]
    values = np.asarray([float(v) for v in values], dtype=float)
    if len(labels) != len(values):
        raise InterpError(f"bar_chart got {len(labels)} labels but {len(values)} values")
    order = np.argsort(-values, kind="stable") if sort else np.arange(len(values))
    if topk is not None:
        order = order[:topk]
    labels = [wrap_label(labels[i], label_width) for i in order]
    values = values[order]
    n = max(len(labels), 1)
    fig = new_figure(7.0, 0.9 + 0.34 * n + 0.12 * sum(lb.count("\n") for lb in labels))
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    ax.barh(y, values, color=color, height=0.7)
    ax.set_yticks(y, labels, fontsize=FONT_SIZE)
    ax.invert_yaxis()
    vmax = float(np.abs(values).max()) if len(values) else 1.0
    for yi, v in zip(y, values):
        ax.text(v + 0.01 * vmax if v >= 0 else v - 0.01 * vmax, yi, value_format.format(v),
                va="center", ha="left" if v >= 0 else "right", fontsize=FONT_SIZE - 1)
    lo = min(0.0, float(values.min()) * 1.18) if len(values) else 0.0
    hi = max(0.0, float(values.max()) * 1.18) if len(values) else 1.0
    ax.set_xlim(lo, hi if hi > lo else lo + 1.0)
    if title:
        ax.set_title(wrap_label(title, 70, 2), fontsize=TITLE_SIZE)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="x", labelsize=FONT_SIZE - 1)
    if not len(values):
        ax.text(0.5, 0.5, "(nothing to show)", ha="center", va="center", transform=ax.transAxes)
    return fig


def compare_bars(labels: Sequence, series: Mapping[str, Sequence[float]], *, title: str = "",
                 xlabel: str = "", topk: int | None = None, label_width: int = 30):
    """Grouped horizontal bars: one group per label, one bar per series (e.g. two datasets'
    concept distributions side by side, to spot a distribution shift). Labels are ordered by
    the largest value across series."""
    import numpy as np

    labels = [str(x) for x in labels]
    names = list(series)
    if not names:
        raise InterpError("compare_bars needs at least one series")
    data = np.asarray([[float(v) for v in series[n]] for n in names], dtype=float)
    if data.shape[1] != len(labels):
        raise InterpError(f"compare_bars got {len(labels)} labels but series of length {data.shape[1]}")
    order = np.argsort(-data.max(axis=0), kind="stable")
    if topk is not None:
        order = order[:topk]
    data = data[:, order]
    labels = [wrap_label(labels[i], label_width) for i in order]
    n, k = len(labels), len(names)
    fig = new_figure(7.5, 1.2 + (0.22 * k + 0.14) * max(n, 1))
    ax = fig.add_subplot()
    colors = ["#3b6fb6", "#e07b39", "#4c9a5b", "#a05195", "#7a7a7a"]
    height = 0.8 / k
    y = np.arange(n)
    for j, name in enumerate(names):
        ax.barh(y + (j - (k - 1) / 2) * height, data[j], height=height, label=wrap_label(name, 40, 1),
                color=colors[j % len(colors)])
    ax.set_yticks(y, labels, fontsize=FONT_SIZE)
    ax.invert_yaxis()
    if title:
        ax.set_title(wrap_label(title, 70, 2), fontsize=TITLE_SIZE)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.legend(fontsize=FONT_SIZE - 1, loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def line_plot(x: Sequence, series: Mapping[str, Sequence[float]], *, title: str = "",
              xlabel: str = "", ylabel: str = "", xticklabels: Sequence[str] | None = None,
              markers: bool = True, dashed: Sequence[str] = ()):
    """Curves over a shared x axis (e.g. accuracy as attention layers are ablated).

    ``dashed``: names of reference series drawn dashed and on top, so a curve that
    coincides with another stays visible. Whole-number x values get whole-number ticks."""
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    for name, ys in series.items():
        ys = list(ys)
        if len(ys) != len(x):
            raise InterpError(f"line_plot series '{name}' has {len(ys)} points but x has {len(x)}")
        ref = name in dashed
        ax.plot(list(x), ys, marker=None if ref or not markers else "o", markersize=4,
                linestyle="--" if ref else "-", linewidth=2.0 if ref else 1.5,
                zorder=3 if ref else 2, label=wrap_label(name, 40, 1))
    if xticklabels is None and x and all(float(v).is_integer() for v in x):
        ax.set_xticks([int(v) for v in x])
    if xticklabels is not None:
        ax.set_xticks(list(x), [wrap_label(t, 14, 2) for t in xticklabels], fontsize=FONT_SIZE - 1,
                      rotation=45 if len(x) > 8 else 0, ha="right" if len(x) > 8 else "center")
    if title:
        ax.set_title(wrap_label(title, 70, 2), fontsize=TITLE_SIZE)
    ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
    ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=FONT_SIZE - 1, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def overlay_heatmap(ax, image, heatmap, *, alpha: float = 0.8, cmap: str = "jet",
                    title: str | None = None, normalize: bool = True, vmin=None, vmax=None,
                    outline: bool = False):
    """Draw ``heatmap`` (any 2-D grid, resized to the image) over a grey version of ``image``
    on ``ax``; return the image artist of the heatmap (for a colorbar).

    The image is shown in grey so that it only darkens or lightens the map: its colours
    never mix with the colour map's (a yellow object under a blue map would read as green),
    so the colours keep the values the colour bar gives them. ``outline``: also draw the
    image's strongest colour edges as thin white lines (where the objects are)."""
    import numpy as np

    img = to_rgb_array(image)
    hm = resize_map(heatmap, img.shape[0], img.shape[1])
    if normalize and vmin is None and vmax is None:
        lo, hi = float(np.nanmin(hm)), float(np.nanmax(hm))
        hm = (hm - lo) / (hi - lo) if hi > lo else np.zeros_like(hm)
        vmin, vmax = 0.0, 1.0
    grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
    art = ax.imshow(hm, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="bilinear")
    if outline:
        edges = sum(np.hypot(*np.gradient(img[..., c])) for c in range(3))
        if float(edges.max()) > 0:
            ax.contour(edges, levels=[0.5 * float(edges.max())], colors="white", linewidths=0.7,
                       alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(wrap_label(title, 24, 2), fontsize=FONT_SIZE)
    return art


def _grid_shape(n: int, ncols: int | None, max_cols: int = 6) -> tuple[int, int]:
    # Reports are about 1,100 px wide: at most ~11 inches at the default DPI stays legible.
    ncols = ncols or min(n, max_cols) or 1
    return max(1, math.ceil(n / ncols)), ncols


def heatmap_grid(image, maps: Mapping[str, object], *, ncols: int | None = None,
                 title: str = "", show_image: bool = True, cell: float = 2.2,
                 alpha: float = 0.8, cmap: str = "jet", shared_scale: bool = False,
                 colorbar: bool = True, colorbar_label: str | None = None, outline: bool = False):
    """One image with several heatmaps (one per text, head, ...) as a grid of overlays.

    With ``show_image`` the first cell is the plain image. ``shared_scale`` puts all maps on
    one colour scale (to compare strengths); otherwise each is min-max normalized. A colour
    bar (``colorbar``) gives the scale: ``colorbar_label``, else "value" (shared scale) or
    "relative to each map's range". ``outline``: see :func:`overlay_heatmap`."""
    import numpy as np

    items = list(maps.items())
    n = len(items) + (1 if show_image else 0)
    rows, cols = _grid_shape(n, ncols, max_cols=5)
    fig = new_figure(cell * cols, cell * rows + (0.5 if title else 0.0) + 0.35 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    vmin = vmax = None
    if shared_scale and items:
        arrays = [np.asarray(m.detach().cpu() if hasattr(m, "detach") else m, dtype=float) for _, m in items]
        vmin = min(float(a.min()) for a in arrays)
        vmax = max(float(a.max()) for a in arrays)
    k = 0
    if show_image:
        axes[0].imshow(to_rgb_array(image))
        axes[0].set_title("image", fontsize=FONT_SIZE)
        axes[0].set_xticks([])
        axes[0].set_yticks([])
        k = 1
    art = None
    for name, hm in items:
        art = overlay_heatmap(axes[k], image, hm, alpha=alpha, cmap=cmap, title=str(name),
                              normalize=not shared_scale, vmin=vmin, vmax=vmax, outline=outline)
        k += 1
    for ax in axes[k:]:
        ax.axis("off")
    if colorbar and art is not None:
        label = colorbar_label or ("value" if shared_scale else
                                   "relative to each map's range (0 = min, 1 = max)")
        bar = fig.colorbar(art, ax=list(axes[:k]), shrink=min(0.9, 0.45 * rows + 0.35),
                           fraction=0.03, pad=0.02)
        bar.set_label(wrap_label(label, 40, 2), fontsize=FONT_SIZE - 1)
        bar.ax.tick_params(labelsize=FONT_SIZE - 2)
    if title:
        fig.suptitle(wrap_label(title, 90, 2), fontsize=TITLE_SIZE)
    return fig


def image_grid(images: Sequence, *, titles: Sequence[str] | None = None, ncols: int | None = None,
               title: str = "", cell: float = 1.8, border_colors: Sequence[str | None] | None = None):
    """A grid of images with optional short titles (wrapped to two lines) and coloured borders
    (e.g. green for highly activating, red for lowly activating images)."""
    n = len(images)
    if titles is not None and len(titles) != n:
        raise InterpError(f"image_grid got {n} images but {len(titles)} titles")
    rows, cols = _grid_shape(max(n, 1), ncols)
    extra = 0.35 if titles is not None else 0.0
    fig = new_figure(cell * cols, (cell + extra) * rows + (0.5 if title else 0.0))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(to_rgb_array(images[i]))
        if titles is not None:
            ax.set_title(wrap_label(titles[i], max(10, int(cell * 9)), 2), fontsize=FONT_SIZE - 1)
        color = border_colors[i] if border_colors is not None and i < len(border_colors) else None
        for spine in ax.spines.values():
            spine.set_visible(color is not None)
            if color is not None:
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
    if n == 0:
        axes[0].text(0.5, 0.5, "(no images)", ha="center", va="center", transform=axes[0].transAxes)
    if title:
        fig.suptitle(wrap_label(title, 90, 2), fontsize=TITLE_SIZE)
    return fig


def table_figure(columns: Sequence[str], rows: Sequence[Sequence], *, title: str = "",
                 col_width: float = 1.8, max_chars: int = 40):
    """A small table rendered as a figure (for PNG output of head-label tables)."""
    cells = [[wrap_label(c, max_chars, 2) for c in r] for r in rows]
    n = max(len(cells), 1)
    fig = new_figure(col_width * max(len(columns), 1), 0.6 + 0.32 * (n + 1))
    ax = fig.add_subplot()
    ax.axis("off")
    if cells:
        tab = ax.table(cellText=cells, colLabels=[str(c) for c in columns], bbox=[0, 0, 1, 1],
                       cellLoc="left")
        tab.auto_set_font_size(False)
        tab.set_fontsize(FONT_SIZE - 1)
        tab.auto_set_column_width(list(range(len(columns))))
    if title:
        ax.set_title(wrap_label(title, 80, 2), fontsize=TITLE_SIZE)
    return fig
