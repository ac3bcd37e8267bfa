"""fusedloss for PyTorch: the library's fused losses as ``torch.nn.functional``-style functions
and ``torch.nn`` modules, bound over its C ABI with ctypes (nothing is compiled against torch).

The shared library is ``$FUSEDLOSS_LIBRARY`` when that is set, else ``libfusedloss.so`` in the
repository's ``build/default`` or ``build/release``; importing fails with a message naming them
when none is there. CPU tensors run on the double-precision CPU reference, CUDA tensors on the
kernels, on the current CUDA stream.
"""

from . import _abi
from ._abi import FusedlossError, InvalidArgumentError, LibraryNotFoundError

_library = _abi.load()

from . import functional  # noqa: E402  (after the library: a missing one fails the import first)
from . import distributed  # noqa: E402
from .linear import linear_cross_entropy  # noqa: E402
from .functional import (  # noqa: E402
    binary_cross_entropy_with_logits,
    cross_entropy,
    mse_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)
from .modules import (  # noqa: E402
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    LinearCrossEntropyLoss,
    MSELoss,
    SigmoidFocalLoss,
    SoftmaxFocalLoss,
)

#: The path of the shared library in use.
library_path = _library.path
#: Whether that library has the CUDA path (False: the CPU reference only).
built_with_cuda = _library.built_with_cuda

#: The version of the library in use (include/fusedloss/version.h is its one place).
__version__ = _library.version

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "mse_loss",
    "linear_cross_entropy",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
    "MSELoss",
    "LinearCrossEntropyLoss",
    "functional",
    "distributed",
    "FusedlossError",
    "InvalidArgumentError",
    "LibraryNotFoundError",
    "library_path",
    "built_with_cuda",
]
