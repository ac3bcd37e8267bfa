// A refusal in words (calls.hpp).
#include "calls.hpp"

namespace fusedloss::bench {

std::string status_text(const char* function, fusedloss_status s, const fusedloss_error& err) {
  std::string text = std::string(function) + ": " + fusedloss_status_string(s);
  if (err.message[0] != '\0') text += std::string(" (") + err.message + ")";
  return text;
}

}  // namespace fusedloss::bench
