// The calls' names and a refusal in words (calls.hpp).
#include "calls.hpp"

namespace fusedloss::bench {

const char* call_name(call c) {
  switch (c) {
    case call::forward:
      return "forward";
    case call::backward:
      return "backward";
    case call::forward_backward:
      break;
  }
  return "forward_backward";
}

const char* step_name(shard_step step) {
  switch (step) {
    case shard_step::partial:
      return "partial";
    case shard_step::rescale:
      return "rescale";
    case shard_step::finish:
      break;
  }
  return "finish";
}

std::string status_text(const char* function, fusedloss_status s, const fusedloss_error& err) {
  std::string text = std::string(function) + ": " + fusedloss_status_string(s);
  if (err.message[0] != '\0') text += std::string(" (") + err.message + ")";
  return text;
}

}  // namespace fusedloss::bench
