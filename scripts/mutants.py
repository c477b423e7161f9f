"""Mutation testing of the README guarantees: do the critical tests catch deliberate bugs?

Usage:

    .venv/bin/python scripts/mutants.py                  # every mutant (make mutants)
    .venv/bin/python scripts/mutants.py --list           # the mutants, without running anything
    .venv/bin/python scripts/mutants.py --only grl-sign kd-t2 --timeout 120
    .venv/bin/python scripts/mutants.py --markdown docs/mutants-table.md

**The approach.** Each mutant in :data:`MUTANTS` is a hand-written source patch, not a generated
one: the exact ``old`` snippet of one file under ``lt_transfer/`` replaced by ``new``, a bug that
breaks one guarantee README.md states (a sign flipped, a factor dropped, a reduction changed, a
check disabled, rows paired with the wrong samples), together with the few tests that defend that
guarantee (``tests/GUARANTEES.md`` maps the guarantees to their tests). Hand-written patches keep
the run short (each mutant runs only its own test node ids, not the suite) and every mutant
meaningful: a generator's thousands of mutants are mostly equivalent or caught by any test.

**The run.** The worktree is copied once to a temporary folder (``.git``, caches and logs left
out); the real worktree is never modified. Every mutant's ``old`` must occur exactly once in its
file, or the mutant is *stale* (the code moved on) and the run stops before testing anything
(``tests/test_mutants_harness.py`` checks this in the normal suite). Then the union of the
mutants' tests runs once unmutated: it must pass, else the run stops naming the failing test.
Then, one mutant at a time, the file in the copy is patched, ``python -m pytest -x -q -p
no:cacheprovider <its tests>`` runs there (``OMP_NUM_THREADS=1``, no bytecode written, so a
patched module is always recompiled) with a time limit, and the file is restored in a
``finally``. A mutant is *caught* when its tests fail, *caught (timeout)* when they run past the
limit (listed separately: a hang is a detection, but a slow one), *survived* when they pass, and
an *error* when pytest could not collect or run them (exit status 2-5: the mutant broke the
import rather than the behaviour, which says nothing about the tests).

**Output.** A markdown table (id | file | guarantee broken | tests | result | seconds) and
``caught X of N (Y%)``, printed and, with ``--markdown FILE``, written to a file. The exit
status is 0, or 1 when the caught share is below ``--fail-under`` or a mutant was an error, or 2
for stale mutants or a failing baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Left out of the temporary copy of the worktree.
_IGNORED = (".git", "__pycache__", ".venv*", "lightning_logs", "*.egg-info", ".ruff_cache", "build", "dist")


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: ``old`` replaced by ``new`` in ``file``, and the tests that must catch it.

    Attributes:
        id: short name (``--only``).
        file: path of the patched file, relative to the repository root (under ``lt_transfer/``).
        old: the exact snippet replaced; it must occur exactly once in ``file``.
        new: its replacement.
        tests: pytest node ids (or files) relative to the repository root.
        guarantee: the README guarantee the bug breaks, in one line.

    Example:
        >>> m = Mutant("x", "lt_transfer/a.py", "return a - b", "return b - a", ("tests/t.py::f",), "sign")
        >>> m.apply("def f(a, b):\\n    return a - b\\n")
        'def f(a, b):\\n    return b - a\\n'
    """

    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    guarantee: str

    def occurrences(self, root: Path = ROOT) -> int:
        """How many times ``old`` occurs in ``file`` under ``root`` (1 when the mutant is current)."""
        return (root / self.file).read_text(encoding="utf-8").count(self.old)

    def apply(self, source: str) -> str:
        """``source`` with the mutation applied.

        Raises:
            ValueError: ``old`` does not occur exactly once (a stale mutant).
        """
        count = source.count(self.old)
        if count != 1:
            raise ValueError(
                f"mutant {self.id!r}: its old snippet occurs {count} times in {self.file}, not once."
            )
        return source.replace(self.old, self.new)


_FC = "tests/callbacks/test_feature_cache.py::"
_PU = "tests/callbacks/test_progressive_unfreezing.py::"
_DA = "tests/modules/test_domain_adaptation.py::"
_BAD = "tests/modules/test_bad_data.py::"
_NT = "tests/callbacks/test_negative_transfer.py::"

#: The mutants, grouped by the README section whose guarantee they break.
MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------------ FeatureCache
    Mutant(
        "fc-label-pairing",
        "lt_transfer/callbacks/feature_cache/store.py",
        "fields = [field[rows].unbind(0) for field in self.fields]",
        "fields = [field[rows.sort().values].unbind(0) for field in self.fields]",
        (_FC + "test_same_head_as_uncached_and_one_backbone_pass_per_sample",),
        "FeatureCache: cached features are served with their own sample's label (same head as uncached)",
    ),
    Mutant(
        "fc-train-mode-bn",
        "lt_transfer/callbacks/feature_cache/callback.py",
        "training = stochastic_modules(self._backbone)",
        "training = []",
        (_FC + "test_frozen_backbone_in_train_mode_is_never_cached",),
        "FeatureCache: a frozen backbone with BatchNorm/dropout in train mode is never cached",
    ),
    Mutant(
        "fc-unfrozen-serves",
        "lt_transfer/callbacks/feature_cache/callback.py",
        "if frozen and patch.served == x.cache_id and not args and not kwargs:",
        "if patch.served == x.cache_id and not args and not kwargs:",
        (_FC + "test_unfreezing_drops_the_cache_and_the_backbone_trains",),
        "FeatureCache: unfreezing mid-epoch drops the cache and the backbone trains on images",
    ),
    Mutant(
        "fc-ddp-shard",
        "lt_transfer/callbacks/feature_cache/build.py",
        "return padded[rank:total:world], True",
        "return padded[0:total:world], True",
        (_FC + "test_ddp_cached_features_pair_with_their_own_samples",),
        "FeatureCache under DDP: each rank computes its own shard, gathered rows pair with their samples",
    ),
    Mutant(
        "fc-worker-order",
        "lt_transfer/callbacks/feature_cache/callback.py",
        "            torch.set_rng_state(self._rng_state)\n",
        "",
        (_FC + "test_dataloader_workers_keep_order_and_single_pass",),
        "FeatureCache with loader workers: restarted workers keep the uncached shuffling (same head)",
    ),
    # ------------------------------------------------------------------ ProgressiveUnfreezing
    Mutant(
        "pu-no-rewrap-on-resume",
        "lt_transfer/callbacks/progressive_unfreezing.py",
        "                self._unfreeze_step(trainer, pl_module, step, restoring=True)\n"
        "            rewrap_ddp(trainer)\n",
        "                self._unfreeze_step(trainer, pl_module, step, restoring=True)\n",
        (_PU + "test_ddp_resume_after_an_unfreeze_keeps_ranks_identical_and_equals_uninterrupted",),
        "ProgressiveUnfreezing: a DDP run resumed after an unfreeze is re-wrapped (ranks stay identical)",
    ),
    Mutant(
        "pu-no-reapply-on-resume",
        "lt_transfer/callbacks/progressive_unfreezing.py",
        "for step in range(self.applied_steps):",
        "for step in range(0):",
        (_PU + "test_resume_before_at_and_after_an_unfreeze_equals_uninterrupted",),
        "ProgressiveUnfreezing: a resumed run re-applies the unfreezes done (equals an uninterrupted run)",
    ),
    Mutant(
        "pu-scheduler-base-lr",
        "lt_transfer/callbacks/_scheduler_groups.py",
        "_append(base_lrs, base_lrs[ref] * scale, seen)",
        "_append(base_lrs, base_lrs[ref], seen)",
        (_PU + "test_every_group_follows_its_scheduler_exactly[lambda]",),
        "ProgressiveUnfreezing: a new group is scheduled as if there from the start (its base_lr scaled)",
    ),
    Mutant(
        "pu-layer-decay-depth",
        "lt_transfer/callbacks/progressive_unfreezing.py",
        "depth = len(self._groups) - 1 - index",
        "depth = index",
        (_PU + "test_transfer_classifier_uses_layer_groups_and_layer_decay",),
        "ProgressiveUnfreezing: lr = backbone_lr_scale * layer_decay ** depth, depth 0 nearest the head",
    ),
    Mutant(
        "pu-frozen-mode-guard",
        "lt_transfer/callbacks/progressive_unfreezing.py",
        "                    if module.training:\n                        module.eval()\n",
        "                    pass\n",
        (
            _PU + "test_frozen_batchnorm_stats_unchanged_through_fit_and_validate",
            _PU + "test_a_module_that_calls_train_mid_epoch_keeps_frozen_groups_in_eval",
        ),
        "ProgressiveUnfreezing: frozen groups stay in eval mode, BatchNorm bit-unchanged",
    ),
    # ------------------------------------------------------------------ TransferClassifier and modules
    Mutant(
        "no-decay-by-value",
        "lt_transfer/optim.py",
        "                ids.add(id(param))\n    return ids\n",
        "                ids.add(id(param))\n"
        "    kept = [p for p in module.parameters() if id(p) in ids]\n"
        "    return {id(p) for p in module.parameters()\n"
        "            if any(p.shape[-1:] == q.shape[-1:] and bool((p == q).all()) for q in kept)}\n",
        ("tests/test_optim.py::test_no_decay_by_identity_not_value",),
        "no weight decay on biases and norm weights, chosen by identity, never by value",
    ),
    Mutant(
        "frozen-mode-eval",
        "lt_transfer/modules/_finetuning.py",
        '        if mode and self.hparams.frozen_mode == "eval":\n'
        "            for group in self.frozen_layer_groups():\n"
        "                for module in group.modules:\n"
        "                    module.eval()\n",
        "        pass\n",
        (
            "tests/modules/test_classifier.py::test_frozen_batchnorm_running_stats_bit_identical_through_fit_and_validate",
        ),
        "TransferClassifier frozen_mode='eval': frozen BatchNorm uses and never updates its statistics",
    ),
    Mutant(
        "label-range-off-by-one",
        "lt_transfer/modules/_batch_checks.py",
        "if low >= 0 and high < num_classes:",
        "if low >= 0 and high <= num_classes:",
        ("tests/modules/test_classifier.py::test_labels_outside_num_classes_raise",),
        "labels outside [0, num_classes) are an error naming batch and values",
    ),
    Mutant(
        "nan-skip-trains",
        "lt_transfer/modules/_base.py",
        'if self._nan_policy == "warn":',
        'if self._nan_policy in ("warn", "skip_batch"):',
        (_BAD + "test_skip_batch_equals_a_run_without_that_batch_and_counts_it",),
        "nan_policy='skip_batch' takes no step on the bad batch and counts it",
    ),
    Mutant(
        "nan-bn-stats-kept",
        "lt_transfer/modules/_base.py",
        "        self._buffer_snapshot.restore()\n",
        "",
        (_BAD + "test_nan_pixel_raises_by_default_and_leaves_weights_and_bn_stats_untouched",),
        "nan_policy: BatchNorm statistics are untouched by the bad batch",
    ),
    Mutant(
        "label-check-eval-stages",
        "lt_transfer/modules/_base.py",
        "        self.check_batch_labels(stage, y, logits.shape[-1], batch_idx, dataloader_idx)\n",
        "",
        (_BAD + "test_bad_labels_in_validation_and_test_batches_name_loader_and_batch[classifier]",),
        "labels are checked in every batch of every stage (validation and test too)",
    ),
    Mutant(
        "checkpoint-weights-only",
        "lt_transfer/checkpoints.py",
        "weights_only=not trust_checkpoint",
        "weights_only=False",
        ("tests/test_checkpoints.py::test_code_in_a_pickle_is_refused_by_default_and_never_runs",),
        "checkpoints are read with weights_only=True: pickled code is refused, never run",
    ),
    # ------------------------------------------------------------------ DomainAdaptationModule
    Mutant(
        "grl-sign",
        "lt_transfer/losses/adversarial.py",
        "return grad_output * (-ctx.coeff), None",
        "return grad_output * ctx.coeff, None",
        ("tests/losses/test_adversarial.py::test_reversal_gradient_is_minus_coeff_times_plain",),
        "DANN: the gradient reversal layer gives the features -coeff times the gradient",
    ),
    Mutant(
        "grl-coefficient-unused",
        "lt_transfer/modules/domain_adaptation.py",
        "reversal = self._trade_off * coefficient if reversal_only else coefficient",
        "reversal = self._trade_off * coefficient if reversal_only else 1.0",
        (_DA + "test_trade_off_on_reversal_scales_only_the_reversed_gradient",),
        "DANN: the features receive -trade_off * coefficient through the reversal",
    ),
    Mutant(
        "schedule-progress-off-by-one",
        "lt_transfer/losses/adversarial.py",
        "return min(trainer.global_step / total, 1.0)",
        "return min((trainer.global_step + 1) / total, 1.0)",
        (_DA + "test_coefficient_follows_progress_and_validation_does_not_move_it",),
        "the coefficient is the schedule at global_step / total steps (trainer state, no hidden state)",
    ),
    Mutant(
        "alignment-sign",
        "lt_transfer/modules/domain_adaptation.py",
        "weighted = self._trade_off * coefficient * transfer",
        "weighted = -self._trade_off * coefficient * transfer",
        (_DA + "test_alignment_term_enters_the_loss_with_its_sign_and_weight",),
        "MMD/CORAL: + trade_off * coefficient * term, minimised (sign)",
    ),
    Mutant(
        "alignment-weight",
        "lt_transfer/modules/domain_adaptation.py",
        "weighted = self._trade_off * coefficient * transfer",
        "weighted = self._trade_off * transfer",
        (_DA + "test_alignment_term_enters_the_loss_with_its_sign_and_weight",),
        "MMD/CORAL: the term is weighted by trade_off times the schedule's coefficient",
    ),
    Mutant(
        "mmd-bandwidth-gradient",
        "lt_transfer/losses/mmd.py",
        "    values = values.detach()\n",
        "",
        ("tests/losses/test_mmd.py::test_the_median_bandwidth_receives_no_gradient",),
        "MMD: the median-heuristic bandwidth receives no gradient",
    ),
    Mutant(
        "da-data-overlap",
        "lt_transfer/data/domain_adaptation.py",
        "first, second = order[:half].sort().values, order[half:].sort().values",
        "first, second = order[:half].sort().values, order[:half].sort().values",
        (
            "tests/data/test_domain_adaptation.py::test_source_and_target_training_digits_are_disjoint_in_the_datamodule",
        ),
        "DomainAdaptationDataModule: source and target training digits are disjoint",
    ),
    # ------------------------------------------------------------------ SHOT
    Mutant(
        "shot-head-check",
        "lt_transfer/modules/source_free.py",
        "        trainable = [name for name, p in self.head.named_parameters() if p.requires_grad]\n"
        "        if trainable:\n",
        "        trainable = [name for name, p in self.head.named_parameters() if p.requires_grad]\n"
        "        if False:\n",
        ("tests/modules/test_source_free.py::test_head_is_frozen_and_must_stay_so",),
        "SHOT: the source head stays frozen; a trainable head is an error at fit start",
    ),
    Mutant(
        "shot-head-eval",
        "lt_transfer/modules/source_free.py",
        "        super().train(mode)\n        self.head.eval()\n",
        "        super().train(mode)\n",
        ("tests/modules/test_source_free.py::test_head_is_frozen_and_must_stay_so",),
        "SHOT: the frozen head stays in eval mode (dropout off)",
    ),
    Mutant(
        "shot-centroids-per-rank",
        "lt_transfer/modules/source_free.py",
        'all_reduce=lambda tensor: strategy.reduce(tensor, reduce_op="sum"),',
        "all_reduce=None,",
        ("tests/modules/test_adaptation_ddp.py::test_ddp_two_processes_keep_ranks_identical",),
        "SHOT under DDP: centroids over the whole target set (statistics summed over ranks)",
    ),
    # ------------------------------------------------------------------ DistillationModule
    Mutant(
        "kd-t2",
        "lt_transfer/losses/distillation.py",
        "per_sample = per_sample * temperature**2",
        "per_sample = per_sample * temperature",
        ("tests/losses/test_distillation.py::test_kd_matches_batchmean_kl_times_t_squared",),
        "distillation: the soft term is KL times T^2",
    ),
    Mutant(
        "kd-teacher-temperature",
        "lt_transfer/losses/distillation.py",
        "log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)",
        "log_p_teacher = F.log_softmax(teacher_logits.detach().float(), dim=-1)",
        (
            "tests/modules/test_distillation_objective.py::test_training_loss_is_alpha_ce_plus_one_minus_alpha_t2_kl",
        ),
        "distillation: the teacher's softmax is taken at temperature T too",
    ),
    Mutant(
        "kd-mean-over-classes",
        "lt_transfer/losses/distillation.py",
        'reduction="none", log_target=True).sum(dim=-1)',
        'reduction="none", log_target=True).mean(dim=-1)',
        ("tests/losses/test_distillation.py::test_kd_matches_batchmean_kl_times_t_squared",),
        "distillation: KL reduced with batchmean (sum over classes), not mean",
    ),
    Mutant(
        "distill-alpha",
        "lt_transfer/modules/distillation.py",
        "loss = (1.0 - hp.alpha) * soft",
        "loss = hp.alpha * soft",
        (
            "tests/modules/test_distillation_objective.py::test_training_loss_is_alpha_ce_plus_one_minus_alpha_t2_kl",
        ),
        "DistillationModule: loss = alpha * CE + (1 - alpha) * T^2 * KL",
    ),
    Mutant(
        "distill-teacher-eval",
        "lt_transfer/modules/distillation.py",
        "        super().train(mode)\n        self.teacher.eval()\n",
        "        super().train(mode)\n",
        (
            "tests/modules/test_distillation.py::test_teacher_frozen_and_in_eval_mode_through_fit_and_validate",
        ),
        "DistillationModule: the frozen teacher stays in eval mode through fit and validate",
    ),
    # ------------------------------------------------------------------ monitoring and metrics
    Mutant(
        "nt-gap-sign",
        "lt_transfer/callbacks/negative_transfer.py",
        'return value - base if self.mode == "max" else base - value',
        'return base - value if self.mode == "max" else value - base',
        (_NT + "test_live_metric_baseline_and_gap_sign",),
        "NegativeTransferMonitor: gap > 0 means transfer helps",
    ),
    Mutant(
        "nt-ddp-reduction",
        "lt_transfer/callbacks/negative_transfer.py",
        "should_flag = bool(trainer.strategy.reduce_boolean_decision(local_flag, all=False))",
        "should_flag = bool(local_flag)",
        (_NT + "test_ddp_decision_is_reduced_over_ranks_that_disagree",),
        "NegativeTransferMonitor: the decision is reduced over DDP ranks (any rank flags: all act)",
    ),
    Mutant(
        "nt-min-delta",
        "lt_transfer/callbacks/negative_transfer.py",
        "bad = finite and not in_grace and gap < -self.min_delta",
        "bad = finite and not in_grace and gap < 0",
        (_NT + "test_a_shortfall_within_min_delta_is_not_a_bad_check",),
        "NegativeTransferMonitor: a check is bad only when the gap is below -min_delta",
    ),
    Mutant(
        "metric-sync-reduction",
        "lt_transfer/metrics/prediction_entropy.py",
        'self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")',
        'self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="mean")',
        ("tests/metrics/test_validators_ddp.py::test_two_ranks_equal_the_single_process_value",),
        "label-free metrics are exact under DDP: every state is gathered to the single-process value",
    ),
    Mutant(
        "target-validation-reads-labels",
        "lt_transfer/callbacks/target_validation.py",
        "        x = split_batch(batch, _NAME).x  # the target labels, if any, are never read\n",
        "        parsed = split_batch(batch, _NAME)\n"
        "        x = parsed.x\n"
        "        if parsed.y is not None:  # the mutant looks at the target labels\n"
        "            self._target_samples += int((parsed.y < 0).sum()) * 0\n",
        ("tests/callbacks/test_target_validation.py::test_user_module_with_poisoned_target_labels",),
        "TargetValidation: target labels are never read",
    ),
    Mutant(
        "mase-seasonality",
        "lt_transfer/metrics/forecasting.py",
        "scale = float(np.abs(values[seasonality:] - values[:-seasonality]).mean())",
        "scale = float(np.abs(values[1:] - values[:-1]).mean())",
        ("tests/metrics/test_forecasting.py::test_mase_scale_by_hand",),
        "MASE is scaled by the in-sample seasonal-naive error of the history",
    ),
)


# ---------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """What running one mutant's tests gave: ``result`` and the seconds it took."""

    mutant: Mutant
    result: str
    seconds: float
    detail: str = ""

    @property
    def caught(self) -> bool:
        return self.result.startswith("caught")


def stale_mutants(mutants: Sequence[Mutant], root: Path = ROOT) -> list[str]:
    """A line per mutant whose ``old`` snippet does not occur exactly once in its file."""
    problems = []
    for mutant in mutants:
        path = root / mutant.file
        if not mutant.file.startswith("lt_transfer/") or not path.is_file():
            problems.append(f"{mutant.id}: {mutant.file} is not a file under lt_transfer/")
            continue
        count = mutant.occurrences(root)
        if count != 1:
            problems.append(
                f"{mutant.id}: its old snippet occurs {count} times in {mutant.file} (must be once)"
            )
    return problems


def _pytest(
    copy: Path, tests: Sequence[str], timeout: float, stop_first: bool = True
) -> tuple[int | None, str]:
    """Run pytest on ``tests`` inside ``copy``; ``(exit status, output)``, status ``None`` on timeout.

    The tests run in their own process group, so a timeout also ends the processes they spawned
    (``ddp_spawn`` workers).
    """
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"]
    command += ["-x"] if stop_first else []
    command += list(tests)
    process = subprocess.Popen(
        command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


def _failed_tests(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def run_mutant(copy: Path, mutant: Mutant, timeout: float) -> Outcome:
    """Patch ``mutant`` into ``copy``, run its tests, and restore the file whatever happens."""
    path = copy / mutant.file
    original = path.read_text(encoding="utf-8")
    start = time.perf_counter()
    try:
        path.write_text(mutant.apply(original), encoding="utf-8")
        status, output = _pytest(copy, mutant.tests, timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    seconds = time.perf_counter() - start
    if status is None:
        return Outcome(mutant, "caught (timeout)", seconds)
    if status == 0:
        return Outcome(mutant, "survived", seconds)
    if status == 1:
        failed = _failed_tests(output)
        return Outcome(mutant, "caught", seconds, failed[0] if failed else "")
    tail = "\n".join(output.strip().splitlines()[-15:])
    return Outcome(mutant, f"error (pytest exit {status})", seconds, tail)


def copy_worktree(root: Path = ROOT) -> Path:
    """A temporary copy of the worktree (caches, logs and ``.git`` left out); the caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix="lt_transfer_mutants_"))
    copy = folder / "repo"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(*_IGNORED))
    return copy


def table(outcomes: Sequence[Outcome]) -> str:
    """The markdown table of the outcomes and the ``caught X of N (Y%)`` line."""
    lines = ["| id | file | guarantee broken | tests | result | seconds |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        m = o.mutant
        tests = "<br>".join(f"`{t.removeprefix('tests/')}`" for t in m.tests)
        file = m.file.removeprefix("lt_transfer/")
        lines.append(f"| `{m.id}` | `{file}` | {m.guarantee} | {tests} | {o.result} | {o.seconds:.0f} |")
    return "\n".join(lines) + "\n\n" + summary(outcomes) + "\n"


def summary(outcomes: Sequence[Outcome]) -> str:
    """``caught X of N (Y%)``, with the timeouts, survivors and errors named."""
    n = len(outcomes)
    caught = sum(o.caught for o in outcomes)
    line = f"caught {caught} of {n} ({100 * caught / n:.0f}%)" if n else "caught 0 of 0"
    for label, kind in (("by timeout", "caught (timeout)"), ("survived", "survived"), ("errors", "error")):
        ids = [o.mutant.id for o in outcomes if o.result.startswith(kind)]
        if ids:
            line += f"; {label}: {', '.join(ids)}"
    return line


def select(only: Sequence[str] | None) -> list[Mutant]:
    """The mutants named by ``--only`` (all without it).

    Raises:
        SystemExit: an unknown id (the message lists the known ones).
    """
    if not only:
        return list(MUTANTS)
    known = {m.id: m for m in MUTANTS}
    unknown = [i for i in only if i not in known]
    if unknown:
        raise SystemExit(f"mutants.py: unknown mutant id(s) {unknown}; known: {sorted(known)}")
    return [known[i] for i in only]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument(
        "--list", action="store_true", help="list the mutants (and check none is stale), run nothing"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (default 300)")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table to FILE")
    parser.add_argument(
        "--fail-under", type=float, default=0.0, metavar="PCT",
        help="exit with status 1 when fewer than PCT percent are caught (default 0)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    mutants = select(args.only)
    stale = stale_mutants(mutants)
    if args.list:
        for m in mutants:
            print(f"{m.id:32} {m.file:48} {m.guarantee}\n{'':32} {' '.join(m.tests)}")
    if stale:
        print("mutants.py: stale mutants (the code changed; update their old snippet):", file=sys.stderr)
        print("\n".join(f"  {line}" for line in stale), file=sys.stderr)
        return 2
    if args.list:
        return 0

    copy = copy_worktree()
    try:
        tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
        print(f"baseline: {len(tests)} test node(s) unmutated ...", flush=True)
        start = time.perf_counter()
        limit = args.timeout * max(1, len(mutants))
        status, output = _pytest(copy, tests, limit, stop_first=False)
        if status != 0:
            failed = _failed_tests(output) or output.strip().splitlines()[-20:]
            what = f"exited with {status}" if status is not None else f"ran past {limit:.0f} s (--timeout)"
            print(f"mutants.py: the baseline must pass, but pytest {what}:", file=sys.stderr)
            print("\n".join(f"  {line}" for line in failed), file=sys.stderr)
            return 2
        print(f"baseline passed in {time.perf_counter() - start:.0f} s", flush=True)
        outcomes = []
        for mutant in mutants:
            outcome = run_mutant(copy, mutant, args.timeout)
            outcomes.append(outcome)
            detail = f"  {outcome.detail.splitlines()[0]}" if outcome.detail else ""
            print(f"{mutant.id}: {outcome.result} ({outcome.seconds:.0f} s){detail}", flush=True)
            if outcome.result.startswith("error"):
                print(outcome.detail, flush=True)
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    report = table(outcomes)
    print("\n" + report)
    if args.markdown is not None:
        args.markdown.write_text(report, encoding="utf-8")
    caught = sum(o.caught for o in outcomes)
    errors = any(o.result.startswith("error") for o in outcomes)
    return 1 if errors or 100 * caught < args.fail_under * len(outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
