"""Benchmark: transfer learning for time series (issue 17), on data that aeon ships (no download).

(a) **UCR classification, source → target.** For every data set in ``--datasets`` (univariate,
    all resampled to ``--length`` points and z-normalised), an FCN (Wang et al. 2017, widths
    ``--filters``) is pretrained on the full training split (the *source*). On every other data
    set (the *target*), with ``--labels-per-class`` labelled training series, it is fine-tuned
    from the source weights (new head, every layer trains, ``--backbone-lr-scale``) and
    compared with the same network trained from scratch on the same series, same epochs and
    optimizer. Scored on the target's full test split, per seed.
    Negative transfer is flagged by :class:`~lt_transfer.NegativeTransferMonitor` used as a
    callback of each fine-tuning run: its baseline is the accuracy of the from-scratch run of
    the same target and seed (a number), it monitors ``val/acc`` on the target's test split,
    checked once, after the last epoch (``patience=1``, ``grace_checks=0``,
    ``min_delta=--min-delta``, action ``"log"``: training is not changed). A pair is flagged
    when the monitor flagged it in a majority of the seeds. The test split is used only to
    report and to flag, never to choose anything.
(b) **M1 yearly forecasting (181 series, horizon 6).** The series are split at random
    (``--m1-source-fraction``) into source and held-out target series. A global forecaster
    (:class:`~lt_transfer.TransferForecaster`, FCN backbone, window ``--m1-window``, inputs
    scaled by the window's mean absolute value) is pretrained on all windows of the source
    series. Each target series' last 6 values are forecast from its history: *zero-shot* (the
    pretrained model as it is), *fine-tuned* (the pretrained model trained further on that
    series' history alone), *per-series model* (the same architecture trained from scratch on
    that series' history alone), and the naive, seasonal naive (m = 1 for yearly data, so it
    equals naive) and drift forecasts. MASE (M4 definition, m = 1) and sMAPE (%).

Prints the torch thread count, writes markdown tables (stdout and ``--markdown``) and one PNG
(``--png``). Smallest run (a few minutes; shows that everything runs end to end):

    python scripts/bench_time_series.py --smoke --png /tmp/ts_smoke.png

Full run (the defaults):

    python scripts/bench_time_series.py --markdown bench_time_series.md
"""

from __future__ import annotations

import argparse
import copy
import logging
import platform
import statistics
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from _common import quiet_cpu_trainer

from lt_transfer import (
    ForecastingDataModule,
    NegativeTransferMonitor,
    TimeSeriesClassificationDataModule,
    TransferClassifier,
    TransferForecaster,
)
from lt_transfer.backbones import FCNBackbone
from lt_transfer.metrics import (
    drift_forecast,
    mase,
    mase_scale,
    naive_forecast,
    seasonal_naive_forecast,
    smape,
)

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # one "GPU available" line per run otherwise
PARTS = ["classification", "forecasting"]
DATASETS = ["GunPoint", "ArrowHead", "OSULeaf", "ItalyPowerDemand", "ACSF1"]
ZERO_SHOT = "zero-shot (pretrained global model)"
FINETUNED = "fine-tuned on each target series"
PER_SERIES = "per-series model (same architecture, target series alone)"
SEASONAL_NAIVE = "seasonal naive (m = 1)"


def _trainer(epochs: int, **kwargs) -> pl.Trainer:
    return quiet_cpu_trainer(**{"devices": 1, "max_epochs": epochs, "num_sanity_val_steps": 0, **kwargs})


def _adam(lr: float):
    return lambda params: torch.optim.Adam(params, lr=lr)


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _short(name: str) -> str:
    return name.split(" (")[0]


# ------------------------------------------------------------------------- (a) classification
def _ucr(name: str, args: argparse.Namespace, seed: int, few: bool) -> TimeSeriesClassificationDataModule:
    return TimeSeriesClassificationDataModule(
        name,
        length=args.length,
        length_mode="resample",
        labels_per_class=args.labels_per_class if few else None,
        batch_size=args.batch_size,
        seed=seed,
    )


def _classifier(
    dm: TimeSeriesClassificationDataModule, args: argparse.Namespace, weights: str | None = None
) -> TransferClassifier:
    backbone = FCNBackbone(filters=tuple(args.filters), weights=weights)
    scale = args.backbone_lr_scale if weights is not None else None
    return TransferClassifier(
        backbone, num_classes=dm.num_classes, backbone_lr_scale=scale, optimizer=_adam(args.lr)
    )


def _test_accuracy(model: TransferClassifier, dm: TimeSeriesClassificationDataModule) -> float:
    return _trainer(1).test(model, dm, verbose=False)[0]["test/acc"]


def run_classification(args: argparse.Namespace, folder: Path) -> dict:
    names = args.datasets
    scratch: dict[str, list[float]] = {t: [] for t in names}
    finetuned: dict[tuple[str, str], list[float]] = {(s, t): [] for s in names for t in names if s != t}
    flags: dict[tuple[str, str], list[bool]] = {pair: [] for pair in finetuned}
    source_acc: dict[str, list[float]] = {s: [] for s in names}
    for seed in args.seeds:
        weights = {}
        for source in names:  # pretraining on the full training split
            pl.seed_everything(seed, verbose=False)
            dm = _ucr(source, args, seed, few=False)
            model = _classifier(dm, args)
            _trainer(args.pretrain_epochs).fit(model, dm)
            source_acc[source].append(_test_accuracy(model, dm))
            weights[source] = str(folder / f"fcn_{source}_{seed}.pt")
            torch.save(model.backbone.state_dict(), weights[source])
        for target in names:
            dm = _ucr(target, args, seed, few=True)
            pl.seed_everything(seed, verbose=False)
            model = _classifier(dm, args)
            _trainer(args.finetune_epochs).fit(model, dm)
            baseline = _test_accuracy(model, dm)
            scratch[target].append(baseline)
            for source in names:
                if source == target:
                    continue
                pl.seed_everything(seed, verbose=False)
                model = _classifier(dm, args, weights=weights[source])
                monitor = NegativeTransferMonitor(
                    "val/acc",
                    baseline=baseline,
                    min_delta=args.min_delta,
                    patience=1,
                    grace_checks=0,
                    action="log",
                )
                trainer = _trainer(
                    args.finetune_epochs, callbacks=[monitor], check_val_every_n_epoch=args.finetune_epochs
                )
                trainer.fit(model, dm.train_dataloader(), dm.test_dataloader())
                finetuned[(source, target)].append(_test_accuracy(model, dm))
                flags[(source, target)].append(monitor.flagged)
            others = ", ".join(f"{s} {100 * finetuned[(s, target)][-1]:.1f}%" for s in names if s != target)
            print(f"  seed {seed} target {target}: scratch {100 * baseline:.1f}%, from {others}", flush=True)
    return {"scratch": scratch, "finetuned": finetuned, "flags": flags, "source_acc": source_acc}


def classification_tables(result: dict, args: argparse.Namespace) -> str:
    names = args.datasets
    scratch, finetuned, flags = result["scratch"], result["finetuned"], result["flags"]
    seeds = len(args.seeds)
    lines = [
        f"Data sets (all resampled to {args.length} points). Source accuracy: the pretrained FCN on its own "
        f"test split ({args.pretrain_epochs} epochs on the full training split).",
        "",
        "| data set | classes | original length | train / test series | source test acc (%) |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        info = _ucr(n, args, 0, few=False).describe()
        low, high = info["original_lengths"]
        length = f"{low}" if low == high else f"{low}–{high}"
        lines.append(
            f"| {n} | {info['classes']} | {length} | {info['train_series']} / {info['test_series']} | "
            f"{_mean_std(result['source_acc'][n], 100)} |"
        )
    lines += [
        "",
        f"Target test accuracy (%) with {args.labels_per_class} labelled series per class, mean ± std over "
        f"{seeds} seeds {args.seeds}: from scratch, and fine-tuned minus from scratch (points) for each "
        "source. NT k/n: NegativeTransferMonitor flagged the pair in k of n seeds; ⚠ = in a majority.",
        "",
        "| source \\ target | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| *from scratch* | " + " | ".join(_mean_std(scratch[t], 100) for t in names) + " |",
    ]
    gains, flagged_pairs = [], []
    for s in names:
        cells = []
        for t in names:
            if s == t:
                cells.append("—")
                continue
            diff = statistics.fmean(100 * (a - b) for a, b in zip(finetuned[(s, t)], scratch[t], strict=True))
            gains.append(diff)
            count = sum(flags[(s, t)])
            majority = count > seeds / 2
            if majority:
                flagged_pairs.append(f"{s}→{t}")
            cells.append(f"{diff:+.1f} (NT {count}/{seeds}){' ⚠' if majority else ''}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    helped = sum(g > 0 for g in gains)
    lines += [
        "",
        f"Mean over the {len(gains)} pairs: fine-tuned − scratch = {statistics.fmean(gains):+.2f} points; "
        f"transfer helped in {helped} pairs, hurt or tied in {len(gains) - helped}; flagged by the monitor "
        f"in a majority of seeds: {len(flagged_pairs)} ({', '.join(flagged_pairs) or 'none'}).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- (b) forecasting
def _forecaster(args: argparse.Namespace) -> TransferForecaster:
    window = args.m1_window if args.linear_path else None
    backbone = FCNBackbone(filters=tuple(args.m1_filters))
    return TransferForecaster(backbone, horizon=6, linear_window=window, optimizer=_adam(args.m1_lr))


def _m1(ids: list[int], args: argparse.Namespace, holdout: str) -> ForecastingDataModule:
    return ForecastingDataModule(
        "m1_yearly", window=args.m1_window, holdout=holdout, series_ids=ids, batch_size=args.m1_batch_size
    )


def _predict_test(model: TransferForecaster, dm: ForecastingDataModule) -> np.ndarray:
    dm.setup("test")
    model.eval()
    with torch.no_grad():
        forecasts = [model.predict_step(batch, 0) for batch in dm.test_dataloader()]
    return torch.cat(forecasts).double().numpy()


def _score(forecasts: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    preds = torch.tensor(forecasts)
    target = torch.tensor(np.stack([t for _, t in pairs]))
    scales = torch.tensor([mase_scale(h) for h, _ in pairs])
    return float(mase(preds, target, scales)), float(smape(preds, target))


def run_forecasting(args: argparse.Namespace) -> dict:
    scores: dict[str, list[tuple[float, float]]] = {}
    for seed in args.seeds:
        order = np.random.default_rng(seed).permutation(181).tolist()
        cut = int(round(args.m1_source_fraction * 181))
        source_ids, target_ids = sorted(order[:cut]), sorted(order[cut:])
        if args.m1_target_series is not None:
            target_ids = target_ids[: args.m1_target_series]
        targets = _m1(target_ids, args, "test")
        pairs = targets.history_and_target("test")
        pl.seed_everything(seed, verbose=False)
        pretrained = _forecaster(args)
        start = time.perf_counter()
        _trainer(args.m1_pretrain_epochs).fit(pretrained, _m1(source_ids, args, "none"))
        seconds = time.perf_counter() - start
        print(f"  seed {seed}: pretrained on {len(source_ids)} series in {seconds:.0f}s", flush=True)
        methods = {ZERO_SHOT: _predict_test(pretrained, targets)}
        finetuned, alone = [], []
        for number in target_ids:
            one = _m1([number], args, "test")
            model = copy.deepcopy(pretrained)
            model.optimizer_factory = _adam(args.m1_finetune_lr)
            _trainer(args.m1_finetune_epochs).fit(model, one)
            finetuned.append(_predict_test(model, one))
            pl.seed_everything(seed, verbose=False)
            scratch = _forecaster(args)
            _trainer(args.m1_scratch_epochs).fit(scratch, one)
            alone.append(_predict_test(scratch, one))
        methods[FINETUNED] = np.concatenate(finetuned)
        methods[PER_SERIES] = np.concatenate(alone)
        methods["naive"] = np.stack([naive_forecast(h, 6) for h, _ in pairs])
        methods[SEASONAL_NAIVE] = np.stack([seasonal_naive_forecast(h, 6, 1) for h, _ in pairs])
        methods["drift"] = np.stack([drift_forecast(h, 6) for h, _ in pairs])
        for name, forecasts in methods.items():
            scores.setdefault(name, []).append(_score(forecasts, pairs))
        summary = ", ".join(f"{_short(n)} {scores[n][-1][0]:.3f}" for n in methods)
        print(f"  seed {seed}: MASE {summary}", flush=True)
    return {"scores": scores, "targets": len(target_ids), "sources": len(source_ids)}


def forecasting_table(result: dict, args: argparse.Namespace) -> str:
    scores = result["scores"]
    lines = [
        f"M1 yearly: {result['sources']} source series (pretraining), {result['targets']} held-out target "
        f"series, horizon 6, window {args.m1_window}; mean ± std over {len(args.seeds)} seeds {args.seeds} "
        "(each seed draws its own source/target split). Lower is better.",
        "",
        "| forecast | MASE | sMAPE (%) |",
        "|---|---|---|",
    ]
    for name, values in scores.items():
        mase_cell = _mean_std([v[0] for v in values], digits=3)
        lines.append(f"| {name} | {mase_cell} | {_mean_std([v[1] for v in values], digits=2)} |")
    lines.append("")
    for transferred in (ZERO_SHOT, FINETUNED):
        own = statistics.fmean(v[0] for v in scores[transferred])
        for reference in (PER_SERIES, SEASONAL_NAIVE):
            ref = statistics.fmean(v[0] for v in scores[reference])
            change = 100 * (own - ref) / ref
            lines.append(
                f"- {_short(transferred)} vs {_short(reference)}: MASE {own:.3f} vs {ref:.3f} "
                f"({abs(change):.1f}% {'lower' if change < 0 else 'higher'})"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ figure
def _heatmap(ax, classification: dict, args: argparse.Namespace) -> None:
    names = args.datasets
    grid = np.full((len(names), len(names)), np.nan)
    for i, s in enumerate(names):
        for j, t in enumerate(names):
            if s != t:
                diff = np.subtract(classification["finetuned"][(s, t)], classification["scratch"][t])
                grid[i, j] = 100 * diff.mean()
    limit = float(np.nanmax(np.abs(grid))) or 1.0
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
    for i, s in enumerate(names):
        for j, t in enumerate(names):
            if s != t:
                flagged = sum(classification["flags"][(s, t)]) > len(args.seeds) / 2
                colour = "white" if abs(grid[i, j]) > 0.6 * limit else "black"
                text = f"{grid[i, j]:+.1f}" + ("\nNT" if flagged else "")
                ax.text(j, i, text, ha="center", va="center", color=colour)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(f"fine-tuned − scratch accuracy (points), {args.labels_per_class} labels/class")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)


def _bars(ax, forecasting: dict) -> None:
    scores = forecasting["scores"]
    labels = [_short(n) for n in scores]
    means = [statistics.fmean(v[0] for v in values) for values in scores.values()]
    stds = [statistics.stdev([v[0] for v in vs]) if len(vs) > 1 else 0.0 for vs in scores.values()]
    colours = ["tab:blue" if n in (ZERO_SHOT, FINETUNED) else "tab:orange" if n == PER_SERIES else "grey"
               for n in scores]
    ax.barh(labels, means, xerr=stds, color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("MASE on held-out M1 yearly series (lower is better)")
    ax.set_title("M1 yearly, horizon 6")


def write_png(
    path: Path, classification: dict | None, forecasting: dict | None, args: argparse.Namespace
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (classification, forecasting) if p is not None]
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    axes = list(axes[0])
    if classification is not None:
        _heatmap(axes.pop(0), classification, args)
    if forecasting is not None:
        _bars(axes.pop(0), forecasting)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _arguments() -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument(
        "--smoke", action="store_true", help="smallest settings (4 sets, 1 seed, 2 epochs, 4 M1 targets)"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    parser.add_argument("--png", type=Path, default=Path("docs/images/time_series_transfer.png"))
    group = parser.add_argument_group("(a) UCR classification")
    group.add_argument("--datasets", nargs="+", default=DATASETS, help="sources = targets (>= 4 for 4 x 4)")
    group.add_argument("--length", type=int, default=128, help="every series is resampled to this length")
    group.add_argument("--labels-per-class", type=int, default=4)
    group.add_argument("--filters", type=int, nargs=3, default=[64, 128, 64], help="FCN widths (paper: 2x)")
    group.add_argument("--pretrain-epochs", type=int, default=100)
    group.add_argument("--finetune-epochs", type=int, default=100, help="also the from-scratch epochs")
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (Fawaz et al. 2018: 1e-3)")
    group.add_argument("--backbone-lr-scale", type=float, default=1.0, help="backbone lr factor, fine-tuning")
    group.add_argument("--min-delta", type=float, default=0.0, help="NegativeTransferMonitor min_delta")
    group = parser.add_argument_group("(b) M1 yearly forecasting")
    group.add_argument("--m1-source-fraction", type=float, default=0.6)
    group.add_argument("--m1-target-series", type=int, default=None, help="only the first N target series")
    group.add_argument("--m1-window", type=int, default=12)
    group.add_argument("--m1-filters", type=int, nargs=3, default=[32, 64, 32])
    group.add_argument("--linear-path", action="store_true", help="TransferForecaster(linear_window=...)")
    group.add_argument("--m1-batch-size", type=int, default=64)
    group.add_argument("--m1-lr", type=float, default=1e-3)
    group.add_argument("--m1-pretrain-epochs", type=int, default=30)
    group.add_argument("--m1-finetune-epochs", type=int, default=20)
    group.add_argument("--m1-finetune-lr", type=float, default=1e-4)
    group.add_argument("--m1-scratch-epochs", type=int, default=100)
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.datasets, args.length, args.filters = [0], DATASETS[:4], 64, [8, 16, 8]
        args.labels_per_class, args.pretrain_epochs, args.finetune_epochs = 2, 2, 2
        args.m1_target_series, args.m1_pretrain_epochs, args.m1_finetune_epochs = 4, 2, 2
        args.m1_scratch_epochs, args.m1_filters = 2, [8, 16, 8]
    return args


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    header = (
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"torch {torch.__version__}, lightning {pl.__version__}; torch threads: {torch.get_num_threads()}."
    )
    print(header, flush=True)
    sections = [header]
    classification = forecasting = None
    if "classification" in args.parts:
        with tempfile.TemporaryDirectory() as folder:
            classification = run_classification(args, Path(folder))
        sections.append("### (a) UCR source → target\n\n" + classification_tables(classification, args))
        print(sections[-1], flush=True)
    if "forecasting" in args.parts:
        forecasting = run_forecasting(args)
        sections.append("### (b) M1 yearly\n\n" + forecasting_table(forecasting, args))
        print(sections[-1], flush=True)
    write_png(args.png, classification, forecasting, args)
    sections.append(f"Total wall time {time.perf_counter() - start:.0f} s; figure: {args.png}")
    print(sections[-1])
    if args.markdown is not None:
        args.markdown.write_text("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
