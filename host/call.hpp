// The three calls every loss has, as the host layer names them internally.
#pragma once

namespace fusedloss {

enum class call { forward, backward, forward_backward };

}  // namespace fusedloss
