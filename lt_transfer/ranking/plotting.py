"""The ranking bar chart: one panel per score, candidates in one order, the best one highlighted.

Drawn with matplotlib's object API (no pyplot), so nothing global changes and no display is
needed. Scores live on different scales, hence one panel each (up to four per row); every panel lists the
candidates in the order of the first score, so a row reads across panels. A candidate
without a value shows ``n/a`` (no source logits, a failed score) or ``failed`` (it could not
be loaded).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lt_transfer.ranking.table import RankingTable

__all__ = ["plot_ranking"]

_BAR = "tab:blue"
_BEST = "tab:orange"
_COLUMNS = 4  # panels per row


def plot_ranking(table: RankingTable, figsize: tuple[float, float] | None = None, dpi: int = 100) -> Any:
    """A matplotlib ``Figure`` of horizontal bars, one panel per score of ``table``.

    Args:
        table: the ranking.
        figsize: figure size in inches (default: 3.2 in per panel column, 0.35 in per
            candidate and panel row).
        dpi: figure resolution.

    Raises:
        ValueError: a table without scores or candidates.

    Example:
        >>> from lt_transfer.ranking.table import CandidateResult, RankingTable
        >>> table = RankingTable((CandidateResult("a", "m", {"logme": 0.2, "leep": float("nan")}),
        ...                       CandidateResult("b", "m", {"logme": 0.5, "leep": -1.0})), ("logme", "leep"))
        >>> fig = plot_ranking(table, figsize=(4, 2), dpi=50)
        >>> len(fig.axes), [t.get_text() for t in fig.axes[0].get_yticklabels()]
        (2, ['b', 'a'])
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not table.scores or not table.results:
        raise ValueError("plot_ranking: the table needs at least one score and one candidate.")
    order = table.ranked()
    names = [r.name for r in order]
    rows = range(len(order))
    columns = min(_COLUMNS, len(table.scores))
    panel_rows = math.ceil(len(table.scores) / columns)
    figsize = figsize or (3.2 * columns + 1.0, (0.35 * len(order) + 1.0) * panel_rows)
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.subplots(panel_rows, columns, squeeze=False, sharey=True)
    axes = list(grid.flat)
    for ax in axes[len(table.scores) :]:
        ax.set_visible(False)
    for ax, score in zip(axes, table.scores, strict=False):
        values = [r.score(score) for r in order]
        finite = [v for v in values if not math.isnan(v)]
        best = max(finite) if finite else None
        colours = [_BEST if best is not None and v == best else _BAR for v in values]
        ax.barh(list(rows), [0.0 if math.isnan(v) else v for v in values], color=colours)
        low = min([0.0, *finite])
        for row, (result, value) in enumerate(zip(order, values, strict=True)):
            if math.isnan(value):
                ax.text(
                    low, row, " failed" if not result.ok else " n/a", va="center", fontsize=7, color="0.4"
                )
        ax.axvline(0.0, color="0.3", linewidth=0.6)
        ax.set_title(f"{score} (higher is better)", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(list(rows), names)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig
