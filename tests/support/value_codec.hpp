// The test support's own reading and writing of stored values: every dtype's element size, a
// double written as one element of a dtype, and an element read back as a double. It shares no
// code with the library's (host/dtype.hpp), so that an oracle built on it cannot inherit a
// rounding bug from the code it checks.
#pragma once

#include <cstddef>

#include "fusedloss/fusedloss.h"

namespace fusedloss::checks {

/// Bytes of one element of `dtype`; 0 for a value that names no dtype.
size_t dtype_size(fusedloss_dtype dtype);

/// Writes `value` as one element of `dtype` at `dst` (dtype_size(dtype) bytes, any alignment).
/// float16, bfloat16 and float32 round it once, straight from double, to nearest with ties to the
/// even significand; past the largest finite value it becomes an infinity of its sign, and NaN
/// stays NaN (quiet, with its sign). float64 stores it unchanged. int32 and int64 store its integer
/// part, which must fit the dtype.
void encode(fusedloss_dtype dtype, double value, void* dst);

/// The element of `dtype` at `src`, as a double: exact for every floating dtype (a NaN reads as
/// NaN), int32 and int64 values within 2^53 in magnitude.
double decode(fusedloss_dtype dtype, const void* src);

}  // namespace fusedloss::checks
