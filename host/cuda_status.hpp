// The library's one way from a CUDA error to a status (CUDA builds only): the error's name and text
// and where the library met it go to the caller's fusedloss_error, and the runtime's last error is
// cleared, so that a caller's next cudaGetLastError() does not see it.
#pragma once

#include <cuda_runtime_api.h>

#include "fusedloss/fusedloss.h"

namespace fusedloss::host {

/// FUSEDLOSS_CUDA_ERROR with "name: text (file:line)"; see FUSEDLOSS_CUDA_FAILURE.
fusedloss_status cuda_failure(fusedloss_error* err, cudaError_t e, const char* file, int line);

}  // namespace fusedloss::host

/// The status of CUDA error `e`, reported into `err` with where it was met.
#define FUSEDLOSS_CUDA_FAILURE(err, e) \
  ::fusedloss::host::cuda_failure((err), (e), __FILE__, __LINE__)
