"""Why ``torch.load(weights_only=True)`` failed, in words a user can act on.

Torch raises one ``pickle.UnpicklingError("Weights only load failed ...")`` both for a file that
holds Python objects the safe loader refuses (a class, a function: unsafe, loadable only by
trusting the file) and for a corrupt pickle (a bad opcode: no setting makes it load), and its
text ends with advice to re-run with ``weights_only=False``, which is wrong for a corrupt file.
:func:`describe_load_failure` tells the two apart from the first relevant line of torch's text.
"""

from __future__ import annotations

#: Lines of torch's safe-unpickler errors that mean "an object the safe loader refuses".
_REFUSED_OBJECT_MARKERS = ("GLOBAL", "Can only build", "Can only create new object", "reduce")


def describe_load_failure(error: BaseException) -> tuple[bool, str]:
    """``(refused_object, reason)`` for an error of ``torch.load(weights_only=True)``.

    ``refused_object`` is True when the file is a valid pickle holding Python objects that safe
    loading refuses, False when the file is corrupt, truncated or not a torch file. ``reason`` is
    torch's one line that says what it met (without its multi-line advice and terminal codes).

    Example:
        >>> import pickle
        >>> describe_load_failure(pickle.UnpicklingError(
        ...     "Weights only load failed. ...\\nUnsupported operand 127\\n\\nCheck the documentation"))
        (False, 'Unsupported operand 127')
        >>> describe_load_failure(pickle.UnpicklingError(
        ...     "Weights only load failed.\\nWeightsUnpickler error: Unsupported global: GLOBAL os.system"))
        (True, 'WeightsUnpickler error: Unsupported global: GLOBAL os.system')
    """
    text = str(error).replace("\x1b[1m", "").replace("\x1b[0m", "")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    refused = next((line for line in lines if any(m in line for m in _REFUSED_OBJECT_MARKERS)), None)
    if refused is not None:
        return True, refused.split(" Please use")[0]
    detail = next(
        (line for line in lines if "Unsupported operand" in line or "String is too long" in line), None
    )
    if detail is None:
        skipped = ("Weights only load failed", "Re-running", "Please file", "Check the documentation")
        detail = next((line for line in lines if not line.startswith(skipped)), lines[0] if lines else "")
    return False, detail
