// Running an element or row loss's call and checking its result: a trial (one call on a copy of
// the buffers under a poison), and the checks of what it returned and wrote (the error, exact
// writes, a second run, finite outputs), with the contract's quantities computed here (invalid
// targets, the mean's normaliser) and the tolerances of comparing two paths.
#ifndef FUSEDLOSS_TESTS_FUZZ_CHECKS_HPP
#define FUSEDLOSS_TESTS_FUZZ_CHECKS_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "buffers.hpp"
#include "case.hpp"
#include "fusedloss/fusedloss.hpp"

namespace fuzz {

// One call: the buffers it ran on, its params, the error details it filled and its status.
template <class P>
struct trial {
  buffers b;
  P p;
  fusedloss_error err;
  fusedloss_status status;
};

// Runs call `c` of `p` on a copy of `original` whose outputs are poisoned with `poison`.
template <class P>
trial<P> run(const fuzz_case& f, fusedloss::call c, const P& p, const buffers& original,
             unsigned char poison, std::vector<unsigned char>& workspace, size_t offset) {
  trial<P> t{original, p, {}, FUSEDLOSS_SUCCESS};
  t.b.poison(poison);
  bind(t.p, t.b);
  std::memset(&t.err, 0x3C, sizeof t.err);  // so that a field the call leaves alone shows
  t.status =
      fusedloss::entry_point<P>(c)(&t.p, workspace.data() + offset, workspace.size() - offset,
                                   nullptr, f.use_err ? &t.err : nullptr);
  return t;
}

// The error a call filled in agrees with its status and names the refused argument.
void check_error(const fuzz_case& f, fusedloss_status status, const fusedloss_error& err);

// The workspace query of `p`, or of a null params pointer, or into a null byte count (drawn from
// `s`): the status the contract gives, and the count written on success alone (0: the CPU path
// needs no workspace).
template <class P>
void check_workspace_query(source& s, const fuzz_case& f, const P& p, bool null_p) {
  fusedloss_error err;
  const bool null_bytes = s.choose(8) == 0;
  size_t bytes = 0xDEADBEEF;
  const fusedloss_status status = fusedloss::c_api<P>::workspace_size(
      null_p ? nullptr : &p, null_bytes ? nullptr : &bytes, f.use_err ? &err : nullptr);
  fusedloss_status want = FUSEDLOSS_INVALID_ARGUMENT;
  if (!null_p && !null_bytes && f.header_ok) {
    want = f.cuda ? FUSEDLOSS_NOT_IMPLEMENTED : FUSEDLOSS_SUCCESS;
  }
  f.require(status == want,
            "workspace_size returned " + std::to_string(status) + ", not " + std::to_string(want));
  f.require(bytes == (status == FUSEDLOSS_SUCCESS ? 0 : 0xDEADBEEF),
            "workspace_size gave " + std::to_string(bytes) + " bytes");
  check_error(f, status, err);
}

// A call given no params (`entry`, the call's C function) is refused.
template <class P>
void check_null_params(const fuzz_case& f, fusedloss::c_call<P> entry,
                       std::vector<unsigned char>& workspace) {
  fusedloss_error err;
  const fusedloss_status status =
      entry(nullptr, workspace.data(), workspace.size(), nullptr, f.use_err ? &err : nullptr);
  f.require(status == FUSEDLOSS_INVALID_ARGUMENT, "a null params pointer was accepted");
  check_error(f, status, err);
}

// The CPU path never touches the workspace, which starts filled with kWorkspaceFill.
void check_workspace_untouched(const fuzz_case& f, const std::vector<unsigned char>& workspace);

// The class of row r, or -1 (ignored) or -2 (neither ignore_index nor in [0, C)).
int64_t row_class(const fuzz_case& f, const block& targets, int64_t r);

// The class-index targets an accepted call counts as invalid (row_class -2).
int64_t invalid_targets(const fuzz_case& f, const block& targets);

// The mean's normaliser, from docs/SEMANTICS.md: M for the element losses, N*S for probability
// targets, the count of non-ignored rows, or with cross-entropy's class weights the sum of their
// weights (in row order, as the library adds them, so that a sum that cancels to 0 agrees).
double normaliser(const fuzz_case& f, const buffers& b);

// Which elements of each output call `c` writes.
struct writes {
  std::vector<char> loss, z_loss, lse, grad;
};
writes expected_writes(const fuzz_case& f, fusedloss::call c, const buffers& b);

// An accepted call: each output written exactly where it should be (padding keeps its poison, or
// in place the logits), the inputs unchanged, the invalid targets added to the counter.
void check_outputs(const fuzz_case& f, fusedloss::call c, const buffers& before,
                   const buffers& after, unsigned char poison);

// A second run, whose outputs started under another poison, wrote the same bits where the first
// wrote and nothing elsewhere: no output is read before it is written. Every other buffer (inputs,
// the counter, logits written in place) holds the same bytes after both.
void check_same_bits(const fuzz_case& f, const buffers& first, const buffers& second);

// Every element of `b` that `written` marks is finite.
bool all_finite(const block& b, const std::vector<char>& written);

// What `mean` must give over a zero normaliser.
bool empty_mean_value(const fuzz_case& f, double v);

// Moderate inputs give finite outputs, except that an empty mean follows its policy.
void check_finite(const fuzz_case& f, fusedloss::call c, const buffers& b);

// `got` is `want` up to the loss dtype's rounding of values whose magnitudes add up to
// `magnitude`, plus `absolute` (subnormal spacings).
bool close(const fuzz_case& f, double got, double want, double magnitude, double absolute);

// The spacing of the loss dtype's subnormals: the absolute error of rounding one value.
double subnormal_spacing(const fuzz_case& f);

// The values an output holds where `written`, in order.
std::vector<double> written_values(const block& b, const std::vector<char>& written);

// Two float64 results of one problem by two paths agree within `tol` wherever both are finite.
void expect_close(const fuzz_case& f, const std::vector<double>& a, const std::vector<double>& b,
                  double tol, const char* what);

}  // namespace fuzz

#endif  // FUSEDLOSS_TESTS_FUZZ_CHECKS_HPP
