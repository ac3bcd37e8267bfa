// The three calls every loss has: the public C++ layer's fusedloss::call, which the host layer
// names its calls with too.
#pragma once

#include "fusedloss/fusedloss.hpp"
