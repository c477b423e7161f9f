"""Test-time adaptation callbacks for ``trainer.test`` / ``trainer.predict`` on any classifier.

* :class:`TENT`: entropy minimisation of the BatchNorm affine parameters, online over the
  test/predict stream (Wang et al., ICLR 2021);
* :class:`AdaBN`: BatchNorm running statistics re-estimated on each target loader before it is
  evaluated (Li et al., 2018).

Both restore the model after the run unless ``keep=True``; both need BatchNorm layers.
"""

from lt_transfer.callbacks.test_time_adaptation.adabn import AdaBN
from lt_transfer.callbacks.test_time_adaptation.tent import TENT

__all__ = ["TENT", "AdaBN"]
