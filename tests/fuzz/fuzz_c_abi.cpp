// A libFuzzer target over the C ABI on the CPU path (the double-precision reference), under
// AddressSanitizer and UndefinedBehaviorSanitizer. Built by the `fuzz` preset (clang, CPU only,
// FUSEDLOSS_BUILD_FUZZER=ON):
//
//   cmake --workflow --preset fuzz             # build, then CTest's fuzz_c_abi: a minute from the
//                                              # seed corpus (copied first; tests/fuzz/run.cmake)
//   mkdir -p /tmp/corpus                       # a longer run, new inputs kept in /tmp/corpus:
//   build/fuzz/tests/fuzz/fuzz_c_abi /tmp/corpus tests/fuzz/corpus -max_total_time=3600
//   build/fuzz/tests/fuzz/fuzz_c_abi crash-... # replay an input that failed
//
// Each input picks a loss (bce, sigmoid_focal, mse, cross_entropy with class-index or probability
// targets, softmax_focal, linear_cross_entropy) and a call (workspace_size, forward, backward,
// forward_backward), or a vocabulary-parallel shard call (workspace_size, partial, rescale,
// finish), or fusedloss_scale_in_place, and builds from its bytes the params: struct_size, device,
// every enum (ints that are no enumerator included), sizes and strides (zero, negative, padded, too
// short, overflowing), options (out of range, NaN, infinite), which pointers are given (null, in
// place), and every input value. Bytes past the input's end come from a generator seeded by the
// input. The generator knows which of its choices the contract refuses, so it knows whether the
// call must be accepted. Every buffer is exactly as long as the sizes imply, so ASan reports any
// access past it. The seed corpus (tests/fuzz/corpus) has one file per loss, call and value mode:
// its first four bytes choose them (see LLVMFuzzerTestOneInput), the rest are random bytes below
// 0xF0, the threshold of a refused choice, so every seed starts from an accepted call (bytes past a
// seed's end come from the generator, which may still spoil a choice; the linear_cross_entropy_*
// and cross_entropy_shard_* seeds were kept only where the call is accepted). The first byte picks
// the family modulo 8: 0 to 5 as before the linear and shard families came (so the older seeds
// keep their meaning), 6 linear and cross-entropy, 7 the shard calls, whose second byte picks
// partial, rescale and finish where a loss's picks forward, backward and forward_backward.
//
// Checked, besides no crash and no sanitizer report:
// - the call is accepted exactly when the contract says (success, or invalid target exactly when
//   a class index is neither ignore_index nor in [0, C), counted here); the error names an
//   argument;
// - a refused call changes no byte of any buffer;
// - an accepted one changes no input, writes every element of the outputs it writes and nothing
//   else (padding columns included; outputs start poisoned), and adds the invalid targets counted
//   here to the counter;
// - run again on fresh buffers under another poison, it writes the same bits (no output is read
//   before it is written);
// - forward_backward's loss, LSE and z-loss are forward's bit for bit, and its gradient is
//   backward's from the same upstream value;
// - sum is the sum of none's values; mean is sum over the normaliser computed here from the
//   targets and weights, and NaN or 0 (per the empty-mean policy) when that is 0;
// - in the generator's moderate mode (finite, moderate values), every output is finite; with
//   float64 logits there, a row loss's backward from forward's saved LSE matches the one that
//   computes its own, and cross-entropy's index targets match their one-hot probability targets
//   (docs/SEMANTICS.md), losses and gradients, through the two target paths.
// Linear + cross-entropy and the shard calls, over buffers by role (input, output written from
// poison, or updated in place: accumulated gradients, a rescaled summary, the counter):
// - the same status, refusal, exact-writes and second-run checks; grad_input may not be the input;
//   the weight's and bias's gradients are float32 or the input's dtype; a shard's slice lies in
//   [0, vocab_size); partial writes every field of the summary, rescale only SUM_EXP and
//   WEIGHTED_SUM, finish the loss, LSE, z-loss and the shard's gradient (padding untouched);
// - linear: forward_backward's loss, LSE and z-loss are forward's bit for bit and its gradients
//   backward's from the same upstream value; accumulating adds the overwritten gradients to what
//   the buffers held (within a rounding of grad_linear_dtype); in float64 with moderate values,
//   loss, LSE and the three gradients are cross-entropy's of x·Wᵀ + b, formed here;
// - shards: finish counts invalid targets only at vocab_start 0 (and every rank reports them);
//   with moderate float64 or float32 logits and the whole vocabulary, the rows split over one to
//   three ranks (partial, MAX all-reduce here, rescale, SUM all-reduce here, finish) give
//   cross-entropy's forward_backward of the whole rows to the summaries' rounding (1e-12 relative
//   in float64, 1e-5 in float32), the same loss and LSE on every rank.
// A failed check prints what it saw and aborts; libFuzzer then saves the input.
//
// This file holds libFuzzer's entry points and the picks of an input's first bytes; the rest, by
// topic: generator.hpp (the input's bytes), buffers.hpp, case.hpp and case.cpp (one generated case
// and the choices the families share), element.cpp and rows.cpp (the losses' generators),
// checks.hpp, checks.cpp and loss.cpp (running a loss's call and checking it), scale.cpp,
// roles.hpp and roles.cpp (buffers by role), linear.cpp, shards.cpp; enum_arguments.c passes
// enum arguments as any int.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "case.hpp"
#include "fusedloss/fusedloss.hpp"
#include "generator.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fusedloss_built_with_cuda()) {
    std::fputs("fuzz_c_abi covers the CPU path of a build without CUDA (the fuzz preset)\n",
               stderr);
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::source s(data, size);
  fuzz::fuzz_case f;
  // 0-5 as before the linear and shard families were added (the seeds' first bytes), 6 and 7 those.
  const int which = s.choose(8);
  // workspace_size or a call; the shard family reads the calls as partial, rescale and finish.
  static const std::optional<fusedloss::call> calls[] = {std::nullopt, fusedloss::call::forward,
                                                         fusedloss::call::backward,
                                                         fusedloss::call::forward_backward};
  f.call = s.from(calls);
  f.moderate = s.choose(2) == 0;
  f.use_err = s.choose(8) != 0;
  switch (which) {
    case 0:
      fuzz::fuzz_loss<fusedloss_bce_params>(s, f);
      break;
    case 1:
      fuzz::fuzz_loss<fusedloss_sigmoid_focal_params>(s, f);
      break;
    case 2:
      fuzz::fuzz_loss<fusedloss_mse_params>(s, f);
      break;
    case 3:
      fuzz::fuzz_loss<fusedloss_cross_entropy_params>(s, f);
      break;
    case 4:
      fuzz::fuzz_loss<fusedloss_softmax_focal_params>(s, f);
      break;
    case 5:
      fuzz::fuzz_scale(s, f);
      break;
    case 6:
      fuzz::fuzz_calls<fusedloss_linear_cross_entropy_params, fuzz::linear_buffers>(s, f);
      break;
    default:
      fuzz::fuzz_calls<fusedloss_cross_entropy_shard_params, fuzz::shard_buffers>(s, f);
      break;
  }
  return 0;
}
