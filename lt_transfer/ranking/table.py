"""The ranking table: one :class:`CandidateResult` per candidate, ordered, noted, written as CSV/markdown.

Pandas-free: :class:`RankingTable` holds the rows, orders them by a score (NaN last),
explains what is missing (:meth:`RankingTable.notes`: which candidates have source logits,
which failed) and writes itself as CSV, markdown, and (through
:func:`~lt_transfer.ranking.plotting.plot_ranking`) a bar chart.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from lt_transfer.ranking.registry import SCORES

__all__ = ["NOT_AVAILABLE", "CandidateResult", "RankingTable"]

#: How a score without a value (no source logits, a failure) is written in CSV and markdown.
NOT_AVAILABLE = "n/a"


@dataclass(frozen=True)
class CandidateResult:
    """What ranking found for one candidate.

    Attributes:
        name: the candidate's name.
        model: what the candidate is (spec and weights, a path or a class name).
        scores: score name → value (higher is better); NaN when the score does not apply
            (no source logits) or failed (see ``score_errors``).
        source_logits: whether the candidate gave source-classifier logits (LEEP, NCE).
        num_samples: target samples scored.
        feature_dim: width of the candidate's features.
        seconds: wall time of loading, feature extraction and scoring.
        error: why the candidate could not be loaded or run (then every score is NaN).
        score_errors: score name → why that score failed.

    Example:
        >>> CandidateResult("a", "torchvision/resnet18", {"logme": 0.5}).ok
        True
    """

    name: str
    model: str
    scores: dict[str, float]
    source_logits: bool = False
    num_samples: int = 0
    feature_dim: int = 0
    seconds: float = 0.0
    error: str | None = None
    score_errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the candidate was loaded and run (scores may still be NaN)."""
        return self.error is None

    def score(self, name: str) -> float:
        """The value of score ``name`` (NaN when missing)."""
        return self.scores.get(name, math.nan)


def _format(value: float, digits: int) -> str:
    return NOT_AVAILABLE if math.isnan(value) else f"{value:.{digits}g}"


@dataclass(frozen=True)
class RankingTable:
    """The result of :func:`~lt_transfer.ranking.rank_models`: candidates × scores.

    Attributes:
        results: one result per candidate, in the order they were given.
        scores: the score names, in the order they were asked for.

    Example:
        >>> table = RankingTable((CandidateResult("a", "m1", {"logme": 0.1}),
        ...                       CandidateResult("b", "m2", {"logme": 0.3})), ("logme",))
        >>> [r.name for r in table.ranked()], table.best().name
        (['b', 'a'], 'b')
    """

    results: tuple[CandidateResult, ...]
    scores: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", tuple(self.results))
        object.__setattr__(self, "scores", tuple(self.scores))

    def ranked(self, score: str | None = None) -> list[CandidateResult]:
        """The results ordered by ``score`` (default: the first score), best first, NaN last."""
        score = self._score(score)
        return sorted(self.results, key=lambda r: (math.isnan(r.score(score)), -_or_zero(r.score(score))))

    def best(self, score: str | None = None) -> CandidateResult | None:
        """The best candidate by ``score`` (default: the first), ``None`` when no candidate has a value."""
        first = self.ranked(score)[0] if self.results else None
        return first if first is not None and not math.isnan(first.score(self._score(score))) else None

    def column(self, score: str) -> list[float]:
        """The values of ``score`` in candidate order (NaN where missing)."""
        return [r.score(self._score(score)) for r in self.results]

    def notes(self) -> list[str]:
        """Why values are missing: scores that need source logits, candidates that failed.

        Example:
            >>> table = RankingTable((CandidateResult("a", "m", {"leep": 1.0}, source_logits=True),
            ...                       CandidateResult("b", "m", {"leep": float("nan")})), ("leep",))
            >>> table.notes()
            ['leep: source-classifier logits needed; only a gave them (n/a for the others).']
        """
        notes = []
        needing = [s for s in self.scores if s in SCORES and SCORES[s].needs_source_logits]
        if needing:
            having = [r.name for r in self.results if r.ok and r.source_logits]
            lacking = [r.name for r in self.results if r.ok and not r.source_logits]
            if lacking:
                who = f"only {', '.join(having)}" if having else "none of the candidates"
                notes.append(
                    f"{', '.join(needing)}: source-classifier logits needed; {who} gave them (n/a for the "
                    "others)."
                )
        for result in self.results:
            if result.error is not None:
                notes.append(f"{result.name} failed: {result.error}")
            for score, error in result.score_errors.items():
                notes.append(f"{result.name}: {score} failed: {error}")
        return notes

    def rows(self) -> list[dict[str, object]]:
        """One plain dict per candidate (ranking order): name, model, every score, timing, error."""
        rows = []
        for rank, result in enumerate(self.ranked(), start=1):
            row: dict[str, object] = {"rank": rank, "name": result.name, "model": result.model}
            row.update({score: result.score(score) for score in self.scores})
            row.update(
                source_logits=result.source_logits,
                num_samples=result.num_samples,
                feature_dim=result.feature_dim,
                seconds=round(result.seconds, 3),
                error=result.error or "; ".join(f"{k}: {v}" for k, v in result.score_errors.items()),
            )
            rows.append(row)
        return rows

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`rows` as CSV (missing scores as ``n/a``) and return the path.

        Example:
            >>> import tempfile
            >>> table = RankingTable((CandidateResult("a", "m", {"logme": float("nan")}),), ("logme",))
            >>> path = table.to_csv(Path(tempfile.mkdtemp()) / "ranking.csv")
            >>> path.read_text().splitlines()[1]
            '1,a,m,n/a,False,0,0,0.0,'
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        fields = ["rank", "name", "model", *self.scores, "source_logits", "num_samples", "feature_dim"]
        fields += ["seconds", "error"]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(v) for k, v in row.items()})
        return path

    def to_markdown(self, digits: int = 4) -> str:
        """A markdown table (ranking order) followed by the :meth:`notes`.

        Example:
            >>> table = RankingTable((CandidateResult("a", "m", {"logme": 0.5}, seconds=1.0),), ("logme",))
            >>> print(table.to_markdown())
            | rank | candidate | logme | seconds |
            |---|---|---|---|
            | 1 | a | 0.5 | 1.0 |
        """
        header = ["rank", "candidate", *self.scores, "seconds"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for rank, result in enumerate(self.ranked(), start=1):
            cells = [str(rank), result.name, *(_format(result.score(s), digits) for s in self.scores)]
            cells.append(f"{result.seconds:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        notes = self.notes()
        if notes:
            lines += ["", *(f"- {note}" for note in notes)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def save(self, output_dir: str | Path, dpi: int = 100) -> dict[str, Path]:
        """Write ``ranking.csv``, ``ranking.md`` and ``ranking.png`` into ``output_dir``.

        Returns:
            ``{"csv": ..., "markdown": ..., "png": ...}``.
        """
        from lt_transfer.ranking.plotting import plot_ranking

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": self.to_csv(out / "ranking.csv"), "markdown": out / "ranking.md"}
        paths["markdown"].write_text(self.to_markdown() + "\n")
        paths["png"] = out / "ranking.png"
        plot_ranking(self, dpi=dpi).savefig(paths["png"], dpi=dpi)
        return paths

    def _score(self, score: str | None) -> str:
        if score is None:
            if not self.scores:
                raise ValueError("RankingTable has no scores; rank with at least one score.")
            return self.scores[0]
        if score not in self.scores:
            raise ValueError(f"RankingTable: no score {score!r}; the table has {list(self.scores)}.")
        return score


def _or_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _csv_value(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return NOT_AVAILABLE
    return value
