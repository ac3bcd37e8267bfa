// How the rows reach the C ABI: through the C++ layer's table of entry points
// (fusedloss::c_api, fusedloss::entry_point), calling the status-returning C functions
// themselves, so that a refusal fails the row with its message instead of throwing. The calls'
// names in rows and messages, the workspace a row's params need, and a timed region's calls run
// in order.
#pragma once

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "fusedloss/fusedloss.hpp"
#include "memory.hpp"
#include "registry.hpp"

namespace fusedloss::bench {

/// "function: status (message)", for a row that fails on a call's status.
std::string status_text(const char* function, fusedloss_status s, const fusedloss_error& err);

/// Allocates the workspace `p`'s calls need, as the C ABI's `workspace_size` call for them says;
/// on failure fails the row and returns false.
template <class Params>
bool allocate_workspace(benchmark::State& state, const Params& p, device_buffer& workspace) {
  fusedloss_error err{};
  size_t bytes = 0;
  if (const fusedloss_status st = c_api<Params>::workspace_size(&p, &bytes, &err);
      st != FUSEDLOSS_SUCCESS) {
    skip(state, status_text("workspace_size", st, err));
    return false;
  }
  if (const cudaError_t e = workspace.allocate(bytes); e != cudaSuccess) {
    skip(state, cuda_error_text(e, "allocating the workspace"));
    return false;
  }
  return true;
}

/// One C call of a timed region, looked up before the timing: its function and its name.
template <class Params>
struct c_step {
  c_call<Params> function;
  const char* name;
};

template <class Params>
c_step<Params> step_of(call c) {
  return {entry_point<Params>(c), fusedloss::name(c)};
}
inline c_step<cross_entropy_shard_params> step_of(shard_step step) {
  return {entry_point(step), fusedloss::name(step)};
}

/// Calls `steps` in order with `p`, the workspace and `stream`, stopping at the first refusal;
/// returns an empty string, or that refusal in words (status_text).
template <class Params>
std::string call_in_order(const std::vector<c_step<Params>>& steps, const Params& p,
                          const device_buffer& workspace, void* stream, fusedloss_error* err) {
  for (const c_step<Params>& step : steps) {
    const fusedloss_status st = step.function(&p, workspace.data(), workspace.bytes(), stream, err);
    if (st != FUSEDLOSS_SUCCESS) return status_text(step.name, st, *err);
  }
  return {};
}

}  // namespace fusedloss::bench
