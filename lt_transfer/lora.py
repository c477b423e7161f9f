"""LoRA adapters through the ``peft`` package (the optional ``lora`` extra).

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) freezes
a pretrained weight :math:`W` and learns a low-rank update,

.. math::
    h = W x + \\frac{\\alpha}{r} B A x, \\qquad A \\in \\mathbb{R}^{r \\times d_{in}},
    B \\in \\mathbb{R}^{d_{out} \\times r}, \\; B_0 = 0,

so only :math:`r (d_{in} + d_{out})` numbers per adapted Linear train. ``peft`` injects the
adapters in place (the module tree keeps its names, so layer groups still match), and
this module is imported only when LoRA is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["apply_lora", "lora_parameter_names", "PEFT_MISSING_MESSAGE"]

PEFT_MISSING_MESSAGE = (
    "finetune='lora' needs the `peft` package, an optional extra of lt_transfer: "
    "pip install 'lt_transfer[lora]' (or pip install peft)."
)


def _import_peft():  # noqa: ANN202 - module object
    try:
        import peft
    except ImportError as error:
        raise ImportError(PEFT_MISSING_MESSAGE) from error
    return peft


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.1,
    target_modules: Sequence[str] | None = None,
) -> list[str]:
    """Freeze ``model`` and inject trainable LoRA adapters into its Linear layers, in place.

    Args:
        model: a Hugging Face model (or any module when ``target_modules`` is given).
        r: adapter rank.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: names (suffixes) of the Linear modules to adapt; ``None`` uses
            peft's default for the model type (``query``/``value`` for BERT).

    Returns:
        The qualified names of the new trainable adapter parameters.

    Raises:
        ImportError: ``peft`` is not installed (names the extra to install).
        ValueError: bad rank/alpha/dropout, or no default targets for this model type.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> apply_lora(net, r=2, target_modules=["0"])
        ['0.lora_A.default.weight', '0.lora_B.default.weight']
        >>> [n for n, p in net.named_parameters() if p.requires_grad]
        ['0.lora_A.default.weight', '0.lora_B.default.weight']
    """
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"lora_r={r!r} must be an int >= 1 (the adapter rank).")
    if alpha <= 0:
        raise ValueError(f"lora_alpha={alpha!r} must be > 0.")
    if not 0 <= dropout < 1:
        raise ValueError(f"lora_dropout={dropout!r} must be in [0, 1).")
    peft = _import_peft()
    if target_modules is None:
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in defaults:
            linears = sorted(
                {n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            )
            raise ValueError(
                f"lora_target_modules=None: peft has no default LoRA targets for model type "
                f"{model_type!r}; name them, e.g. from this model's Linear layers {linears[:12]}."
            )
        target_modules = defaults[model_type]
    before = {name for name, _ in model.named_parameters()}
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none"
    )
    try:
        peft.inject_adapter_in_model(config, model)
    except ValueError as error:
        raise ValueError(
            f"lora_target_modules={list(target_modules)} matched no Linear layer of the model ({error})."
        ) from error
    new = [name for name, param in model.named_parameters() if "lora_" in name and name not in before]
    if not new:
        raise ValueError(f"lora_target_modules={list(target_modules)} matched no Linear layer of the model.")
    for name, param in model.named_parameters():
        param.requires_grad_(name in new)
    return new


def lora_parameter_names(model: nn.Module) -> list[str]:
    """Names of the LoRA adapter parameters in ``model``.

    Example:
        >>> from torch import nn
        >>> lora_parameter_names(nn.Linear(2, 2))
        []
    """
    return [name for name, _ in model.named_parameters() if ".lora_A." in name or ".lora_B." in name]
