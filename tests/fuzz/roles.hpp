// Buffers by role, for linear + cross-entropy and the shard calls: a slot names a buffer and says
// what a call does with it (reads it, writes it from poison, or updates it in place) and where it
// writes; the checks over slots, the trial of one call on them, and fuzz_calls, the flow of
// fuzz_loss over them, which each family instantiates with its params and buffers.
#ifndef FUSEDLOSS_TESTS_FUZZ_ROLES_HPP
#define FUSEDLOSS_TESTS_FUZZ_ROLES_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "case.hpp"
#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"
#include "generator.hpp"

namespace fuzz {

// What a call does with a buffer: reads it only; writes it from scratch (it starts poisoned in
// each run and must be written exactly at `writes`); or updates it in place (accumulated gradients,
// a summary rescaled in place, the counter, logits overwritten by their gradient), where it may
// change only at `writes`.
enum class role { input, output, updated };
struct slot {
  const char* name;
  const block* b;
  role r;
  std::vector<char> writes;
};

// The slot named `name` (one that a check looks up; it must be there).
const slot& slot_named(const std::vector<slot>& slots, const char* name);

// Masks over a block's elements, built only for an accepted problem, whose sizes fit the blocks.
std::vector<char> first_of(const block& b, int64_t k);
std::vector<char> rows_of(const block& b, int64_t rows, int64_t width, int64_t stride,
                          int64_t offset = 0);

// The C function of a family's call: fusedloss::entry_point of a loss's call or of a shard step.
template <class P>
fusedloss::c_call<P> entry_of(fusedloss::call c) {
  return fusedloss::entry_point<P>(c);
}
template <class P>
fusedloss::c_call<P> entry_of(fusedloss::shard_step step) {
  return fusedloss::entry_point(step);
}

template <class B, class C>
void poison_outputs(B& b, const fuzz_case& f, C c, unsigned char byte) {
  for (const slot& s : b.slots(f, c)) {
    // The slots point at b's own (non-const) blocks.
    if (s.r == role::output) {
      auto& bytes = const_cast<block*>(s.b)->bytes;
      std::fill(bytes.begin(), bytes.end(), byte);
    }
  }
}

// An accepted call: inputs keep their bytes, outputs are written exactly where they should be
// (padding keeps its poison), updated buffers change nowhere else.
void check_slots(const fuzz_case& f, const std::vector<slot>& was, const std::vector<slot>& is,
                 unsigned char poison);

// A second run whose outputs started under another poison wrote the same bits where the first
// wrote, and left the rest of every buffer as the first did.
void check_same_bits(const fuzz_case& f, const std::vector<slot>& first,
                     const std::vector<slot>& second);

// One call over buffers by role B, as trial is one over `buffers`: the buffers it ran on, its
// params, the error details it filled and its status.
template <class P, class B>
struct trial_of {
  B b;
  P p;
  fusedloss_error err;
  fusedloss_status status;
};

// Runs call `c` of `p` on a copy of `original` whose outputs are poisoned with `poison`.
template <class P, class B, class C>
trial_of<P, B> run_on(const fuzz_case& f, C c, const P& p, const B& original, unsigned char poison,
                      std::vector<unsigned char>& workspace, size_t offset) {
  trial_of<P, B> t{original, p, {}, FUSEDLOSS_SUCCESS};
  poison_outputs(t.b, f, c, poison);
  bind(t.p, t.b);
  std::memset(&t.err, 0x3C, sizeof t.err);
  t.status = entry_of<P>(c)(&t.p, workspace.data() + offset, workspace.size() - offset, nullptr,
                            f.use_err ? &t.err : nullptr);
  return t;
}

// Two results of one problem by two paths agree within `tol(i)` wherever the second is finite.
template <class Tol>
void expect_near(const fuzz_case& f, const block& got, const block& want,
                 const std::vector<char>& written, Tol&& tol, const char* what) {
  for (int64_t i = 0; i < static_cast<int64_t>(written.size()); ++i) {
    if (!written[i] || !std::isfinite(want.value(i))) continue;
    const double a = got.value(i), b = want.value(i);
    if (!(std::fabs(a - b) <= tol(i, b))) {
      char message[160];
      std::snprintf(message, sizeof message, "%s[%lld]: %.17g against %.17g", what,
                    static_cast<long long>(i), a, b);
      f.fail_with(message);
    }
  }
}

// The relative rounding of a dtype and the spacing of its subnormals.
double epsilon_of(int dtype);
double tiny_of(int dtype);

// A class index that counts: neither ignore_index nor outside [0, limit).
bool valid_class(const fuzz_case& f, int64_t y, int64_t limit);
// The targets of the first `rows` rows that are neither ignore_index nor in [0, limit).
int64_t count_invalid(const fuzz_case& f, const block& targets, int64_t rows, int64_t limit);

// Moderate inputs give finite losses, except that an empty mean follows its policy.
void check_finite_losses(const fuzz_case& f, const std::vector<slot>& slots, double normaliser);

// The flow of fuzz_loss, over buffers by role: the status the contract asks for, a refused call
// changing no byte, an accepted one writing exactly its outputs, the same bits under another
// poison, finite outputs from moderate values, and the family's relations. A family's buffers B
// come with, found by argument-dependent lookup: picked_call (the input's pick as the family's
// calls, fusedloss::call or fusedloss::shard_step), generate, bind, B::slots, reported_invalid,
// counter_added, check_finite and check_relations.
template <class P, class B>
void fuzz_calls(source& s, fuzz_case& f) {
  using api = fusedloss::c_api<P>;
  P p;
  api::init(&p);
  B b;
  values v{s, f.moderate};
  if (!generate(s, v, f, p, b)) return;
  if (f.why != nullptr) f.what += std::string(", refused for ") + f.why;

  std::vector<unsigned char> workspace(64, kWorkspaceFill);
  const size_t offset = s.choose(4) == 0 ? 1 + s.choose(7) : 0;
  f.misaligned_workspace = offset % 8 != 0;
  const bool null_p = s.choose(64) == 0;

  const auto pick = picked_call(f, b);
  if (!pick) {
    check_workspace_query(s, f, p, null_p);
    return;
  }
  const auto c = *pick;
  if (null_p) {
    check_null_params<P>(f, entry_of<P>(c), workspace);
    return;
  }

  const trial_of<P, B> first = run_on(f, c, p, b, kPoison, workspace, offset);
  check_error(f, first.status, first.err);
  check_workspace_untouched(f, workspace);
  fusedloss_status want = FUSEDLOSS_INVALID_ARGUMENT;
  if (f.valid && f.cuda) {
    want = f.misaligned_workspace ? FUSEDLOSS_INVALID_ARGUMENT : FUSEDLOSS_NOT_IMPLEMENTED;
  } else if (f.valid) {
    want = reported_invalid(f, c, b) > 0 ? FUSEDLOSS_INVALID_TARGET : FUSEDLOSS_SUCCESS;
  }
  f.require(first.status == want, "returned " + std::to_string(first.status) + " (" +
                                      (f.use_err && first.err.argument ? first.err.argument : "") +
                                      "), not " + std::to_string(want));
  if (want != FUSEDLOSS_SUCCESS && want != FUSEDLOSS_INVALID_TARGET) {
    B unchanged = b;
    poison_outputs(unchanged, f, c, kPoison);
    const std::vector<slot> was = unchanged.slots(f, c), is = first.b.slots(f, c);
    for (size_t k = 0; k < was.size(); ++k) {
      f.require(was[k].b->bytes == is[k].b->bytes,
                std::string("a refused call changed ") + is[k].name);
    }
    return;
  }
  check_slots(f, b.slots(f, c), first.b.slots(f, c), kPoison);
  if (first.b.counter.given) {
    const int64_t added = counter_added(f, c, b);
    f.require(first.b.counter.index(0) == b.counter.index(0) + added,
              "invalid_target_count is " + std::to_string(first.b.counter.index(0)) + ", not " +
                  std::to_string(b.counter.index(0)) + " + " + std::to_string(added));
  }
  const trial_of<P, B> second = run_on(f, c, p, b, kOtherPoison, workspace, offset);
  f.require(second.status == first.status, "a second run returned another status");
  check_same_bits(f, first.b.slots(f, c), second.b.slots(f, c));
  if (f.moderate) check_finite(f, c, first.b);
  check_relations(f, p, first, b, workspace);
}

}  // namespace fuzz

#endif  // FUSEDLOSS_TESTS_FUZZ_ROLES_HPP
