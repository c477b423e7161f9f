"""NegativeTransferMonitor: does transfer hurt compared with a baseline?

Transfer learning can make a model *worse* on the target than not transferring at all:
a source that is too different, alignment that maps target classes onto the wrong source
classes, or fine-tuning that destroys useful pretrained features ("negative transfer";
Rosenstein et al., "To transfer or not to transfer", NeurIPS 2005 workshop; Wang et al.,
"Characterizing and Avoiding Negative Transfer", CVPR 2019, who define it as the target
error of the transfer algorithm exceeding that of the target-only baseline).

The callback compares a monitored target metric from ``trainer.callback_metrics`` with a
baseline after every validation, logs the gap, and acts when the metric stays worse than
the baseline. It works on any LightningModule: it only reads logged metrics (and, for
``action="restore"``, the module's ``state_dict``).

**Without target labels** there is no ``val/target/acc``: monitor a label-free validator that
:class:`~lt_transfer.TargetValidation` logs, e.g. ``monitor=DEFAULT_MONITOR``
(``val/target/<DEFAULT_VALIDATOR>``, the validator the selection benchmark found best; both in
:mod:`lt_transfer.callbacks.target_validation`) with ``baseline="initial"`` or a source-only
run's log; ``mode`` then defaults to the validator's (``VALIDATOR_MODES``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lt_transfer.callbacks.target_validation import VALIDATOR_MODES

__all__ = ["NegativeTransferMonitor", "read_logged_metric"]

Mode = Literal["max", "min"]
Action = Literal["log", "warn", "stop", "restore"]
_METRIC_PREFIX = "metric:"


def _log_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(
            f"NegativeTransferMonitor baseline log {str(path)!r} does not exist; pass a CSVLogger "
            "metrics.csv, a TensorBoard event file, or a log directory holding one of them."
        )
    files = sorted(path.rglob("metrics.csv")) or sorted(path.rglob("events.out.tfevents.*"))
    folders = sorted({f.parent for f in files})
    if not files:
        raise FileNotFoundError(
            f"No metrics.csv or events.out.tfevents.* file under {str(path)!r}; point the baseline at "
            "the log folder of the baseline run (e.g. lightning_logs/version_0)."
        )
    if len(folders) > 1:
        raise ValueError(
            f"Several runs' logs under {str(path)!r}: {[str(f) for f in folders]}; pass the folder "
            "of the one baseline run."
        )
    return files


def _read_csv(path: Path, name: str) -> list[float]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [float(row[name]) for row in rows if row.get(name) not in (None, "")]


def _read_tensorboard(path: Path, name: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
    accumulator.Reload()
    if name not in accumulator.Tags().get("scalars", []):
        return []
    return [event.value for event in accumulator.Scalars(name)]


def read_logged_metric(
    path: str | Path, name: str, reduce: Literal["best", "last"] = "best", mode: Mode = "max"
) -> float:
    """Read a metric that another run logged (CSVLogger ``metrics.csv`` or TensorBoard events).

    Args:
        path: a ``metrics.csv``, an ``events.out.tfevents.*`` file, or the log folder of one
            run (searched recursively; all event files of that folder are read, in order).
        name: the logged metric name, e.g. ``"val/target/acc"``.
        reduce: ``"best"`` (max or min by ``mode``) or ``"last"`` logged value. NaN values
            are skipped.
        mode: what "best" means.

    Raises:
        FileNotFoundError: no such file or no log in the folder.
        ValueError: several runs in the folder, or the metric was never logged (the message
            lists what was).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "metrics.csv").write_text("epoch,val/acc\\n0,0.5\\n1,0.75\\n2,0.7\\n")
        >>> read_logged_metric(folder, "val/acc"), read_logged_metric(folder, "val/acc", "last")
        (0.75, 0.7)
    """
    if reduce not in ("best", "last") or mode not in ("max", "min"):
        raise ValueError(
            f"read_logged_metric(reduce={reduce!r}, mode={mode!r}): 'best'|'last' and 'max'|'min'."
        )
    files = _log_files(Path(path))
    values: list[float] = []
    for file in files:
        values += _read_csv(file, name) if file.name.endswith(".csv") else _read_tensorboard(file, name)
    values = [v for v in values if math.isfinite(v)]
    if not values:
        available: set[str] = set()
        for file in files:
            if file.name.endswith(".csv"):
                with file.open(newline="") as handle:
                    available |= set(next(csv.reader(handle), []))
            else:
                from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

                accumulator = EventAccumulator(str(file))
                accumulator.Reload()
                available |= set(accumulator.Tags().get("scalars", []))
        raise ValueError(
            f"Metric {name!r} has no finite value in {[str(f) for f in files]}; logged metrics: "
            f"{sorted(available)}. Set baseline_metric to the baseline run's metric name."
        )
    if reduce == "last":
        return values[-1]
    return max(values) if mode == "max" else min(values)


class NegativeTransferMonitor(Callback):
    """Compare a target metric with a baseline after every validation and flag negative transfer.

    After each validation (not the sanity check) it reads ``monitor`` from
    ``trainer.callback_metrics`` and computes the *gap* ``value - baseline`` (``mode="max"``)
    or ``baseline - value`` (``mode="min"``): positive means transfer helps. The check is
    *bad* when ``gap < -min_delta``; negative transfer is flagged after ``patience``
    consecutive bad checks (the first ``grace_checks`` validations are never bad: a model
    still adapting is allowed to start below the baseline).

    ``mode=None`` (the default) is the validator's mode (:data:`VALIDATOR_MODES
    <lt_transfer.callbacks.target_validation.VALIDATOR_MODES>`) when the last part of
    ``monitor`` names a :class:`~lt_transfer.TargetValidation` validator (``"val/target/dev"``
    → ``"min"``), else ``"max"``.

    Baselines (``baseline``):

    * a number: a fixed score, e.g. the target-only accuracy you measured;
    * ``"initial"``: the model's own score before the first training step, read from the
      sanity check, so the Trainer must run a full one (``num_sanity_val_steps=-1``; with
      ``limit_val_batches`` it is as long as every validation). Checks whether training
      (fine-tuning, adaptation) made the pretrained model worse. Kept in the checkpoint,
      so a resumed run does not re-measure it on trained weights;
    * ``"metric:<name>"``: another metric logged in the same run, compared at every check,
      e.g. the accuracy of a cheap reference head (target-only or source-only, trained on
      detached features) that your module logs;
    * any other string: the log of another run (a CSVLogger ``metrics.csv``, a TensorBoard
      event file, or the run's log folder), reduced by ``baseline_reduce``; the metric name
      is ``baseline_metric`` (default: ``monitor``). See :func:`read_logged_metric`.

    Under ``fast_dev_run`` (a smoke test: no logging, no real validation) the monitor makes
    no check and reads no baseline: a log baseline is only looked up (a missing file is still
    an error), ``"initial"`` needs no sanity check. It says so in an info line.

    Every check logs ``<log_prefix>/gap``, ``/baseline`` and ``/flagged`` to the trainer's
    loggers (rank zero) and puts them into ``trainer.callback_metrics``, so
    ``EarlyStopping``/``ModelCheckpoint`` can use the gap too.

    Actions when flagged: ``"log"`` only logs; ``"warn"`` also warns once (rank zero);
    ``"stop"`` also stops training; ``"restore"`` also loads the weights of the best check
    seen (including the ``"initial"`` weights) into the module, then stops. ``"restore"``
    keeps a CPU copy of the best ``state_dict`` in memory and in the callback's checkpoint
    state (the checkpoint grows by one model).

    NaN or infinite values (a diverged run, a metric with nothing to average) are recorded
    in :attr:`history` but are neither good nor bad: they leave the consecutive count as it
    is, and a run whose every value is NaN is never flagged. Under DDP the decision is
    reduced over ranks (any rank flags → all stop), as ``EarlyStopping`` does; log the
    monitored metric with ``sync_dist=True`` (or as a torchmetrics ``Metric``) so all ranks see
    the same value. Progress (:attr:`history`, counts, best value, baseline, flag) is in
    ``state_dict``, so a resumed run continues exactly.

    Args:
        monitor: the target metric, e.g. ``"val/target/acc"``.
        baseline: a number, ``"initial"``, ``"metric:<name>"`` or a log path (see above).
        mode: ``"max"`` if higher is better, ``"min"`` if lower is better; ``None``: the
            validator's mode for a ``TargetValidation`` validator, else ``"max"``.
        baseline_metric: metric name inside a baseline log (default: ``monitor``).
        baseline_reduce: ``"best"`` or ``"last"`` value of the baseline log.
        min_delta: tolerated shortfall before a check counts as bad (>= 0).
        patience: consecutive bad checks before flagging (>= 1).
        grace_checks: first validations that are never bad (>= 0).
        action: ``"log"``, ``"warn"``, ``"stop"`` or ``"restore"``.
        strict: raise when ``monitor`` (or a ``"metric:"`` baseline) is missing; ``False``
            treats a missing value as NaN.
        log_prefix: name prefix of the logged gap, baseline and flag.

    Raises:
        ValueError: invalid arguments (named in the message); at fit start, ``"initial"``
            without a full sanity check; a missing metric with ``strict=True``.

    Example:
        >>> monitor = NegativeTransferMonitor("val/target/acc", baseline=0.8, action="stop")
        >>> round(monitor.gap(0.75), 4), round(monitor.gap(0.9), 4)  # > 0: transfer helps
        (-0.05, 0.1)
        >>> NegativeTransferMonitor("val/target/dev", baseline="initial").mode  # a risk: lower is better
        'min'
    """

    def __init__(
        self,
        monitor: str = "val/target/acc",
        baseline: float | str = "initial",
        mode: Mode | None = None,
        baseline_metric: str | None = None,
        baseline_reduce: Literal["best", "last"] = "best",
        min_delta: float = 0.0,
        patience: int = 1,
        grace_checks: int = 0,
        action: Action = "warn",
        strict: bool = True,
        log_prefix: str = "negative_transfer",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"{name}(monitor={monitor!r}) must be a metric name such as 'val/target/acc'.")
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float, str)):
            raise ValueError(
                f"{name}(baseline={baseline!r}) must be a number, 'initial', 'metric:<name>' or a log path."
            )
        if isinstance(baseline, (int, float)) and not math.isfinite(baseline):
            raise ValueError(f"{name}(baseline={baseline!r}) must be a finite number.")
        if isinstance(baseline, str) and baseline.startswith(_METRIC_PREFIX) and not baseline[7:]:
            raise ValueError(f"{name}(baseline={baseline!r}): name the metric, e.g. 'metric:val/ref/acc'.")
        if mode not in ("max", "min", None):
            raise ValueError(
                f"{name}(mode={mode!r}) must be 'max' (higher is better), 'min' or None (the mode of a "
                "TargetValidation validator, else 'max')."
            )
        if baseline_reduce not in ("best", "last"):
            raise ValueError(f"{name}(baseline_reduce={baseline_reduce!r}) must be 'best' or 'last'.")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"{name}(min_delta={min_delta!r}) must be a finite number >= 0.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"{name}(patience={patience!r}) must be an int >= 1.")
        if isinstance(grace_checks, bool) or not isinstance(grace_checks, int) or grace_checks < 0:
            raise ValueError(f"{name}(grace_checks={grace_checks!r}) must be an int >= 0.")
        if action not in ("log", "warn", "stop", "restore"):
            raise ValueError(f"{name}(action={action!r}) must be 'log', 'warn', 'stop' or 'restore'.")
        self.monitor = monitor
        self.baseline = baseline
        self.mode: Mode = VALIDATOR_MODES.get(monitor.rsplit("/", 1)[-1], "max") if mode is None else mode
        self.baseline_metric = baseline_metric or monitor
        self.baseline_reduce = baseline_reduce
        self.min_delta = float(min_delta)
        self.patience = patience
        self.grace_checks = grace_checks
        self.action = action
        self.strict = strict
        self.log_prefix = log_prefix
        # progress (saved in state_dict)
        self.history: list[dict[str, Any]] = []
        self.baseline_value: float | None = float(baseline) if isinstance(baseline, (int, float)) else None
        self.bad_checks = 0
        self.flagged = False
        self.flagged_at: dict[str, int] | None = None
        self.best_value: float | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self._warned_nan = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, baseline=str(self.baseline))

    # ----------------------------------------------------------------- maths
    def gap(self, value: float, baseline: float | None = None) -> float:
        """``value - baseline`` (``mode="max"``) or ``baseline - value``: > 0 means transfer helps."""
        base = self.baseline_value if baseline is None else baseline
        if base is None:
            return float("nan")
        return value - base if self.mode == "max" else base - value

    def _better(self, value: float, than: float | None) -> bool:
        return than is None or (value > than if self.mode == "max" else value < than)

    # ----------------------------------------------------------------- hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        is_log = isinstance(self.baseline, str) and self.baseline != "initial"
        is_log = is_log and not str(self.baseline).startswith(_METRIC_PREFIX)
        if trainer.fast_dev_run:
            if is_log:
                _log_files(Path(str(self.baseline)))  # a wrong path fails the smoke test, cheaply
            rank_zero_info("NegativeTransferMonitor: fast_dev_run: no baseline is read and no check is made.")
            return
        if is_log and self.baseline_value is None:
            assert isinstance(self.baseline, str)
            self.baseline_value = read_logged_metric(
                self.baseline, self.baseline_metric, self.baseline_reduce, self.mode
            )
            rank_zero_info(
                f"NegativeTransferMonitor: baseline {self.baseline_metric}={self.baseline_value:.4f} "
                f"({self.baseline_reduce}) from {self.baseline}"
            )

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after a resume the baseline comes from the checkpoint (load_state_dict runs before this)
        full_sanity_check = trainer.num_sanity_val_steps == float("inf")
        needs_sanity_check = self.baseline == "initial" and self.baseline_value is None
        if needs_sanity_check and not full_sanity_check and not trainer.fast_dev_run:
            raise ValueError(
                "NegativeTransferMonitor(baseline='initial') reads the model's score before training "
                f"from the sanity check, but Trainer(num_sanity_val_steps={trainer.num_sanity_val_steps}) "
                "does not run a full one; set Trainer(num_sanity_val_steps=-1) or pass a fixed baseline."
            )

    def _read(self, trainer: Trainer, name: str) -> float:
        metrics = trainer.callback_metrics
        if name not in metrics:
            if self.strict:
                raise RuntimeError(
                    f"NegativeTransferMonitor: metric {name!r} was not logged; available: "
                    f"{sorted(metrics)}. Log it in validation_step or pass strict=False."
                )
            return float("nan")
        value = metrics[name]
        return float(value.float().mean()) if isinstance(value, torch.Tensor) else float(value)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING:
            return  # trainer.validate() outside fit does not count as a check
        if trainer.sanity_checking:
            if self.baseline == "initial" and self.baseline_value is None:
                value = self._read(trainer, self.monitor)
                if math.isfinite(value):
                    self.baseline_value = value
                    self._maybe_keep_best(pl_module, value)
                    rank_zero_info(f"NegativeTransferMonitor: initial {self.monitor}={value:.4f} (baseline)")
                else:
                    rank_zero_warn(
                        f"NegativeTransferMonitor: the initial {self.monitor} is {value}; no baseline, "
                        "negative transfer cannot be detected in this run."
                    )
            return
        self._check(trainer, pl_module)

    def _maybe_keep_best(self, pl_module: LightningModule, value: float) -> None:
        if not math.isfinite(value) or not self._better(value, self.best_value):
            return
        self.best_value = value
        if self.action == "restore":
            self.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()
            }

    def _check(self, trainer: Trainer, pl_module: LightningModule) -> None:
        value = self._read(trainer, self.monitor)
        baseline = self.baseline_value
        if isinstance(self.baseline, str) and self.baseline.startswith(_METRIC_PREFIX):
            baseline = self._read(trainer, self.baseline[len(_METRIC_PREFIX) :])
        gap = self.gap(value, baseline) if baseline is not None else float("nan")
        finite = math.isfinite(gap)
        if not finite and not self._warned_nan:
            self._warned_nan = True
            rank_zero_warn(
                f"NegativeTransferMonitor: {self.monitor}={value}, baseline={baseline}: not finite; this "
                "check is skipped (further non-finite checks are skipped silently)."
            )
        in_grace = len(self.history) < self.grace_checks
        bad = finite and not in_grace and gap < -self.min_delta
        if finite and not in_grace:
            self.bad_checks = self.bad_checks + 1 if bad else 0
        self._maybe_keep_best(pl_module, value)
        local_flag = self.bad_checks >= self.patience
        should_flag = bool(trainer.strategy.reduce_boolean_decision(local_flag, all=False))
        self.history.append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "value": value,
                "baseline": float("nan") if baseline is None else float(baseline),
                "gap": gap,
                "bad": bad,
            }
        )
        self._log(trainer, gap, baseline, should_flag)
        if not should_flag:
            return
        first = not self.flagged
        self.flagged = True
        if first:
            self.flagged_at = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        message = (
            f"NegativeTransferMonitor: negative transfer: {self.monitor}={value:.4f} is worse than the "
            f"baseline {baseline:.4f} (gap {gap:+.4f}) for {self.bad_checks} consecutive check(s) at "
            f"epoch {trainer.current_epoch}, step {trainer.global_step}."
        )
        if self.action == "warn" and first:
            rank_zero_warn(message)
        elif self.action in ("stop", "restore"):
            if self.action == "restore" and self.best_weights is not None:
                pl_module.load_state_dict(self.best_weights)
                message += f" Restored the weights of the best check ({self.monitor}={self.best_value:.4f})."
            trainer.should_stop = True
            if first:
                rank_zero_warn(message + " Stopping training.")

    def _log(self, trainer: Trainer, gap: float, baseline: float | None, flagged: bool) -> None:
        metrics = {
            f"{self.log_prefix}/gap": gap,
            f"{self.log_prefix}/baseline": float("nan") if baseline is None else float(baseline),
            f"{self.log_prefix}/flagged": float(flagged),
        }
        for key, value in metrics.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    # ----------------------------------------------------------------- state
    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "history": [dict(h) for h in self.history],
            "baseline_value": self.baseline_value,
            "bad_checks": self.bad_checks,
            "flagged": self.flagged,
            "flagged_at": self.flagged_at,
            "best_value": self.best_value,
        }
        if self.action == "restore":
            state["best_weights"] = self.best_weights
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict["history"]]
        if not isinstance(self.baseline, (int, float)):
            self.baseline_value = state_dict["baseline_value"]
        self.bad_checks = int(state_dict["bad_checks"])
        self.flagged = bool(state_dict["flagged"])
        self.flagged_at = state_dict["flagged_at"]
        self.best_value = state_dict["best_value"]
        self.best_weights = state_dict.get("best_weights")
