"""The C ABI of libfusedloss (``include/fusedloss/fusedloss.h``), mirrored with ctypes.

Each params struct below repeats the header's fields one by one, in the header's order and with
its types (pointers as ``c_void_p``, enums as ``c_int``, ``size_t`` as ``c_size_t``); the test
suite checks every field's offset and every struct's size against the compiled header, and
:func:`load` refuses a library whose init calls report another ``struct_size``.

This module knows nothing of torch: it finds and loads the library, declares the calls, and turns a
status into an exception.
"""

import ctypes
import os
from ctypes import c_char, c_char_p, c_double, c_float, c_int, c_int64, c_size_t, c_void_p
from pathlib import Path

# fusedloss_status
SUCCESS, INVALID_ARGUMENT, INVALID_TARGET, NOT_IMPLEMENTED, CUDA_ERROR = range(5)
# fusedloss_device
DEVICE_CPU, DEVICE_CUDA = range(2)
# fusedloss_dtype
FLOAT32, FLOAT16, BFLOAT16, FLOAT64, INT32, INT64 = range(6)
# fusedloss_reduction, fusedloss_empty_mean and fusedloss_weight_layout, by their Python names
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
EMPTY_MEAN = {"nan": 0, "zero": 1}
WEIGHT_PER_ELEMENT, WEIGHT_PER_CLASS = range(2)


class Error(ctypes.Structure):
    """``fusedloss_error``."""

    _fields_ = [("status", c_int), ("argument", c_char_p), ("message", c_char * 256)]


class BceParams(ctypes.Structure):
    """``fusedloss_bce_params``."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device", c_int),
        ("numel", c_int64),
        ("num_classes", c_int64),
        ("logits", c_void_p),
        ("logits_dtype", c_int),
        ("targets", c_void_p),
        ("targets_dtype", c_int),
        ("weight", c_void_p),
        ("weight_layout", c_int),
        ("pos_weight", c_void_p),
        ("reduction", c_int),
        ("empty_mean", c_int),
        ("loss", c_void_p),
        ("grad_logits", c_void_p),
        ("grad_loss", c_void_p),
        ("grad_scale", c_float),
        ("grad_scale_ptr", c_void_p),
    ]


class SigmoidFocalParams(ctypes.Structure):
    """``fusedloss_sigmoid_focal_params``."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device", c_int),
        ("numel", c_int64),
        ("logits", c_void_p),
        ("logits_dtype", c_int),
        ("targets", c_void_p),
        ("targets_dtype", c_int),
        ("alpha", c_double),
        ("gamma", c_double),
        ("reduction", c_int),
        ("empty_mean", c_int),
        ("loss", c_void_p),
        ("grad_logits", c_void_p),
        ("grad_loss", c_void_p),
        ("grad_scale", c_float),
        ("grad_scale_ptr", c_void_p),
    ]


class MseParams(ctypes.Structure):
    """``fusedloss_mse_params``."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device", c_int),
        ("numel", c_int64),
        ("logits", c_void_p),
        ("logits_dtype", c_int),
        ("targets", c_void_p),
        ("targets_dtype", c_int),
        ("reduction", c_int),
        ("empty_mean", c_int),
        ("loss", c_void_p),
        ("grad_logits", c_void_p),
        ("grad_loss", c_void_p),
        ("grad_scale", c_float),
        ("grad_scale_ptr", c_void_p),
    ]


class CrossEntropyParams(ctypes.Structure):
    """``fusedloss_cross_entropy_params``."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device", c_int),
        ("batch", c_int64),
        ("num_classes", c_int64),
        ("spatial", c_int64),
        ("row_stride", c_int64),
        ("logits", c_void_p),
        ("logits_dtype", c_int),
        ("targets", c_void_p),
        ("targets_dtype", c_int),
        ("weight", c_void_p),
        ("ignore_index", c_int64),
        ("label_smoothing", c_double),
        ("z_loss", c_double),
        ("softcap", c_double),
        ("reduction", c_int),
        ("empty_mean", c_int),
        ("loss", c_void_p),
        ("lse", c_void_p),
        ("z_loss_out", c_void_p),
        ("grad_logits", c_void_p),
        ("grad_row_stride", c_int64),
        ("grad_loss", c_void_p),
        ("grad_scale", c_float),
        ("grad_scale_ptr", c_void_p),
        ("invalid_target_count", c_void_p),
    ]


class SoftmaxFocalParams(ctypes.Structure):
    """``fusedloss_softmax_focal_params``."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device", c_int),
        ("batch", c_int64),
        ("num_classes", c_int64),
        ("spatial", c_int64),
        ("row_stride", c_int64),
        ("logits", c_void_p),
        ("logits_dtype", c_int),
        ("targets", c_void_p),
        ("targets_dtype", c_int),
        ("alpha", c_void_p),
        ("gamma", c_double),
        ("ignore_index", c_int64),
        ("reduction", c_int),
        ("empty_mean", c_int),
        ("loss", c_void_p),
        ("lse", c_void_p),
        ("grad_logits", c_void_p),
        ("grad_row_stride", c_int64),
        ("grad_loss", c_void_p),
        ("grad_scale", c_float),
        ("grad_scale_ptr", c_void_p),
        ("invalid_target_count", c_void_p),
    ]


class LinearCrossEntropyParams(ctypes.Structure):
    """``fusedloss_linear_cross_entropy_params`` (fusedloss/linear_cross_entropy.h)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device", c_int),
        ("batch", c_int64),
        ("hidden", c_int64),
        ("num_classes", c_int64),
        ("input", c_void_p),
        ("input_row_stride", c_int64),
        ("input_dtype", c_int),
        ("linear_weight", c_void_p),
        ("linear_bias", c_void_p),
        ("targets", c_void_p),
        ("targets_dtype", c_int),
        ("weight", c_void_p),
        ("ignore_index", c_int64),
        ("label_smoothing", c_double),
        ("z_loss", c_double),
        ("softcap", c_double),
        ("reduction", c_int),
        ("empty_mean", c_int),
        ("loss", c_void_p),
        ("lse", c_void_p),
        ("z_loss_out", c_void_p),
        ("grad_input", c_void_p),
        ("grad_input_row_stride", c_int64),
        ("grad_linear_weight", c_void_p),
        ("grad_linear_bias", c_void_p),
        ("grad_linear_dtype", c_int),
        ("accumulate_grad_linear", c_int),
        ("grad_loss", c_void_p),
        ("grad_scale", c_float),
        ("grad_scale_ptr", c_void_p),
        ("invalid_target_count", c_void_p),
        ("max_workspace_bytes", c_size_t),
    ]


class CrossEntropyShardParams(ctypes.Structure):
    """``fusedloss_cross_entropy_shard_params`` (fusedloss/vocab_parallel.h)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device", c_int),
        ("batch", c_int64),
        ("num_classes", c_int64),
        ("vocab_start", c_int64),
        ("vocab_size", c_int64),
        ("row_stride", c_int64),
        ("logits", c_void_p),
        ("logits_dtype", c_int),
        ("targets", c_void_p),
        ("targets_dtype", c_int),
        ("weight", c_void_p),
        ("ignore_index", c_int64),
        ("label_smoothing", c_double),
        ("z_loss", c_double),
        ("softcap", c_double),
        ("reduction", c_int),
        ("empty_mean", c_int),
        ("summary", c_void_p),
        ("loss", c_void_p),
        ("lse", c_void_p),
        ("z_loss_out", c_void_p),
        ("grad_logits", c_void_p),
        ("grad_row_stride", c_int64),
        ("grad_scale", c_float),
        ("grad_scale_ptr", c_void_p),
        ("invalid_target_count", c_void_p),
    ]


#: fusedloss_shard_summary_field: the summary's fields, `batch` values each, and the first of those
#: the SUM all-reduce takes (it takes the rest too).
SUMMARY_MAX, SUMMARY_REFERENCE, SUMMARY_SUM_EXP = range(3)
SUMMARY_FIELDS = 7

#: The shard calls of vocabulary-parallel cross-entropy, in the order a step runs them
#: (``fusedloss_cross_entropy_shard_<step>``).
SHARD_STEPS = ("partial", "rescale", "finish")

#: Every loss's params struct, by the name its C calls carry (``fusedloss_<name>_forward``, ...).
PARAMS = {
    "bce": BceParams,
    "sigmoid_focal": SigmoidFocalParams,
    "mse": MseParams,
    "cross_entropy": CrossEntropyParams,
    "softmax_focal": SoftmaxFocalParams,
    "linear_cross_entropy": LinearCrossEntropyParams,
}

#: Every struct with an init call: the losses' params and the shard calls'.
STRUCTS = dict(PARAMS, cross_entropy_shard=CrossEntropyShardParams)

#: The three calls every loss has.
CALLS = ("forward", "backward", "forward_backward")

#: The header's name of each status, for messages.
_STATUS_NAMES = {
    SUCCESS: "FUSEDLOSS_SUCCESS",
    INVALID_ARGUMENT: "FUSEDLOSS_INVALID_ARGUMENT",
    INVALID_TARGET: "FUSEDLOSS_INVALID_TARGET",
    NOT_IMPLEMENTED: "FUSEDLOSS_NOT_IMPLEMENTED",
    CUDA_ERROR: "FUSEDLOSS_CUDA_ERROR",
}

_REPO_ROOT = Path(__file__).resolve().parents[2]  # python/fusedloss/_abi.py -> the repository
#: The build trees searched, relative to the repository root, when $FUSEDLOSS_LIBRARY is unset.
BUILD_TREES = ("build/default", "build/release")


class LibraryNotFoundError(ImportError):
    """The shared library is neither at $FUSEDLOSS_LIBRARY nor in a build tree."""


def find_library():
    """The path of ``libfusedloss.so``: ``$FUSEDLOSS_LIBRARY`` when set, else the package's own copy
    (``pip install .`` puts one beside this file), else the first build tree of
    :data:`BUILD_TREES` that has one. Raises :class:`LibraryNotFoundError` naming them."""
    env = os.environ.get("FUSEDLOSS_LIBRARY")
    if env:
        if not Path(env).is_file():
            raise LibraryNotFoundError(
                f"fusedloss: $FUSEDLOSS_LIBRARY is {env!r}, which is not a file; point it at "
                "libfusedloss.so, or unset it to use the build tree"
            )
        return Path(env)
    searched = [Path(__file__).resolve().parent / "libfusedloss.so"]
    searched += [_REPO_ROOT / tree / "libfusedloss.so" for tree in BUILD_TREES]
    for path in searched:
        if path.is_file():
            return path
    raise LibraryNotFoundError(
        "fusedloss: cannot find libfusedloss.so: $FUSEDLOSS_LIBRARY is not set, and none of "
        + ", ".join(str(p) for p in searched)
        + " exists. Install the package (`pip install --no-build-isolation .`), build the "
        "library (`cmake --preset default && cmake --build --preset default`, or "
        "`-DFUSEDLOSS_WITH_CUDA=OFF` for the CPU reference alone) or set $FUSEDLOSS_LIBRARY to "
        "its path."
    )


class FusedlossError(RuntimeError):
    """A call failed; ``status`` and ``argument`` (the refused argument's name, or None) say how."""

    def __init__(self, message, status, argument):
        super().__init__(message)
        self.status = status
        self.argument = argument


class InvalidArgumentError(FusedlossError, ValueError):
    """The library refused an argument (FUSEDLOSS_INVALID_ARGUMENT); nothing was written."""


class Library:
    """The loaded library with its calls declared."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._dll = ctypes.CDLL(str(self.path))
        except OSError as e:
            raise ImportError(f"fusedloss: cannot load {self.path}: {e}") from e
        dll = self._dll
        for name, params in PARAMS.items():
            pointer = ctypes.POINTER(params)
            init = getattr(dll, f"fusedloss_{name}_params_init")
            init.argtypes, init.restype = [pointer], None
            size = getattr(dll, f"fusedloss_{name}_workspace_size")
            size.argtypes = [pointer, ctypes.POINTER(c_size_t), ctypes.POINTER(Error)]
            size.restype = c_int
            for call in CALLS:
                fn = getattr(dll, f"fusedloss_{name}_{call}")
                fn.argtypes = [pointer, c_void_p, c_size_t, c_void_p, ctypes.POINTER(Error)]
                fn.restype = c_int
        shard = ctypes.POINTER(CrossEntropyShardParams)
        dll.fusedloss_cross_entropy_shard_params_init.argtypes = [shard]
        dll.fusedloss_cross_entropy_shard_params_init.restype = None
        dll.fusedloss_cross_entropy_shard_workspace_size.argtypes = [
            shard, ctypes.POINTER(c_size_t), ctypes.POINTER(Error)]
        dll.fusedloss_cross_entropy_shard_workspace_size.restype = c_int
        for step in SHARD_STEPS:
            fn = getattr(dll, f"fusedloss_cross_entropy_shard_{step}")
            fn.argtypes = [shard, c_void_p, c_size_t, c_void_p, ctypes.POINTER(Error)]
            fn.restype = c_int
        dll.fusedloss_read_and_clear_counter.argtypes = [
            c_void_p, c_int, c_void_p, ctypes.POINTER(c_int64), ctypes.POINTER(Error)]
        dll.fusedloss_read_and_clear_counter.restype = c_int
        dll.fusedloss_built_with_cuda.argtypes, dll.fusedloss_built_with_cuda.restype = [], c_int
        dll.fusedloss_scale_in_place.argtypes = [
            c_void_p, c_int, c_int64, c_void_p, c_int, c_int, c_void_p, ctypes.POINTER(Error)]
        dll.fusedloss_scale_in_place.restype = c_int
        self.built_with_cuda = bool(dll.fusedloss_built_with_cuda())
        dll.fusedloss_version.argtypes, dll.fusedloss_version.restype = [], c_int
        code = dll.fusedloss_version()
        #: The library's version (major.minor.patch), include/fusedloss/version.h's.
        self.version = f"{code // 10000}.{code // 100 % 100}.{code % 100}"
        for name, params in STRUCTS.items():
            reported = self.params(name).struct_size
            if reported != ctypes.sizeof(params):
                raise ImportError(
                    f"fusedloss: {self.path} says fusedloss_{name}_params is {reported} bytes, "
                    f"this binding's mirror is {ctypes.sizeof(params)}: the library was built "
                    "from another fusedloss.h; rebuild it or update python/fusedloss/_abi.py"
                )

    def params(self, name):
        """A new params struct of ``name`` (a loss, or ``cross_entropy_shard``), filled by its init
        call (PyTorch's defaults)."""
        p = STRUCTS[name]()
        getattr(self._dll, f"fusedloss_{name}_params_init")(ctypes.byref(p))
        return p

    def workspace_size(self, name, params):
        """The workspace bytes that every call of ``name`` (a loss, or ``cross_entropy_shard``)
        needs for ``params``."""
        size, err = c_size_t(0), Error()
        status = getattr(self._dll, f"fusedloss_{name}_workspace_size")(
            ctypes.byref(params), ctypes.byref(size), ctypes.byref(err))
        check(status, err, f"fusedloss_{name}_workspace_size")
        return size.value

    def call(self, name, call, params, workspace, workspace_bytes, stream):
        """Runs ``fusedloss_<name>_<call>`` and returns its status; raises on any status but
        success and FUSEDLOSS_INVALID_TARGET (which the caller reads through the counter)."""
        err = Error()
        status = getattr(self._dll, f"fusedloss_{name}_{call}")(
            ctypes.byref(params), workspace, workspace_bytes, stream, ctypes.byref(err))
        if status != INVALID_TARGET:
            check(status, err, f"fusedloss_{name}_{call}")
        return status

    def shard_call(self, step, params, workspace, workspace_bytes, stream):
        """Runs ``fusedloss_cross_entropy_shard_<step>`` and returns its status; raises on any
        status but success and FUSEDLOSS_INVALID_TARGET (finish's, on the CPU)."""
        return self.call("cross_entropy", f"shard_{step}", params, workspace, workspace_bytes,
                         stream)

    def scale_in_place(self, data, dtype, numel, scale, scale_dtype, device, stream):
        """Multiplies ``numel`` values at address ``data`` by the one value at ``scale`` (both in
        ``device``'s memory), in place on ``stream``; a scale of exactly 1 does nothing more than
        read it, on the device (no host synchronisation decides it)."""
        err = Error()
        status = self._dll.fusedloss_scale_in_place(data, dtype, numel, scale, scale_dtype, device,
                                                    stream, ctypes.byref(err))
        check(status, err, "fusedloss_scale_in_place")

    def read_and_clear_counter(self, counter, device, stream):
        """Reads an int64 counter at address ``counter`` in ``device``'s memory and clears it
        (synchronising ``stream`` on CUDA)."""
        value, err = c_int64(0), Error()
        status = self._dll.fusedloss_read_and_clear_counter(
            counter, device, stream, ctypes.byref(value), ctypes.byref(err))
        check(status, err, "fusedloss_read_and_clear_counter")
        return value.value


def check(status, err, function):
    """Raises :class:`FusedlossError` unless ``status`` is success."""
    if status == SUCCESS:
        return
    message = err.message.decode(errors="replace") or "(no message)"
    argument = err.argument.decode() if err.argument else None
    kind = InvalidArgumentError if status == INVALID_ARGUMENT else FusedlossError
    raise kind(f"{function} returned {_STATUS_NAMES.get(status, status)}: {message}", status,
               argument)


_library = None


def load():
    """The library, loaded on first use and kept."""
    global _library
    if _library is None:
        _library = Library(find_library())
    return _library
