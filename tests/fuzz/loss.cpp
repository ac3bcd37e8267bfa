// The element and row losses' flow (fuzz_loss): generate a case, then workspace_size or a call, its
// status against the contract, a refusal changing no byte, an accepted call's exact writes and a
// second run; and the relations between calls: forward_backward against forward and backward, the
// reductions against each other, and for float64 row losses backward from a saved LSE and
// cross-entropy's index targets against their one-hot probabilities.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "case.hpp"
#include "checks.hpp"
#include "fusedloss/fusedloss.hpp"

namespace fuzz {

// Row losses, float64 logits, moderate values: backward given forward's saved LSE (exact to an
// ulp in float64) computes the gradient backward computes without it, to rounding: the saved-LSE
// path reads each row's LSE at its own index. Upstream 1 under none and sum; mean's 1/D widens the
// tolerance, which is otherwise far below any wrong LSE's effect.
template <class P>
void check_saved_lse(const fuzz_case& f, const P& p, const buffers& original,
                     std::vector<unsigned char>& workspace) {
  if (!f.smooth_in_lse || (!original.grad.given && !original.in_place)) return;
  buffers saving = original;
  saving.lse_is_input = false;
  saving.lse.allocate(true, FUSEDLOSS_FLOAT64, f.count);
  saving.loss.allocate(true, FUSEDLOSS_FLOAT64, f.loss_values());
  const trial<P> fw = run(f, fusedloss::call::forward, p, saving, kPoison, workspace, 0);
  f.require(fw.status == FUSEDLOSS_SUCCESS || fw.status == FUSEDLOSS_INVALID_TARGET,
            "a forward saving the LSE was refused");
  buffers reading = original;
  reading.lse_is_input = true;
  reading.lse = fw.b.lse;
  reading.grad_loss.allocate(true, FUSEDLOSS_FLOAT64, f.loss_values());
  for (int64_t i = 0; i < reading.grad_loss.count; ++i) reading.grad_loss.set(i, 1.0);
  buffers recomputing = reading;
  recomputing.lse.allocate(false, FUSEDLOSS_FLOAT64, 0);
  fuzz_case g = f;
  g.call = fusedloss::call::backward;
  const trial<P> saved = run(g, fusedloss::call::backward, p, reading, kPoison, workspace, 0);
  const trial<P> own = run(g, fusedloss::call::backward, p, recomputing, kPoison, workspace, 0);
  f.require(saved.status == own.status, "backward's status depends on a saved LSE");
  const std::vector<char> w = expected_writes(g, fusedloss::call::backward, saved.b).grad;
  const double d = f.reduction == FUSEDLOSS_REDUCTION_MEAN ? std::fabs(normaliser(f, original)) : 1;
  const double tol = 1e-9 * (1.0 + static_cast<double>(f.classes)) / std::min(d, 1.0);
  expect_close(f, written_values(saved.b.grad_view(), w), written_values(own.b.grad_view(), w), tol,
               "backward from a saved LSE against its own");
}

// Cross-entropy, float64 logits, moderate values, every row a class: index targets equal the
// smoothed one-hot probability targets row by row (docs/SEMANTICS.md), losses under none and
// gradients from upstream 1, computed by the two target paths.
void check_one_hot(const fuzz_case& f, const fusedloss_cross_entropy_params& p,
                   const buffers& original, std::vector<unsigned char>& workspace) {
  if (!f.index_targets || f.count == 0 || f.count * f.classes > kCap) return;
  for (int64_t r = 0; r < f.count; ++r) {
    if (row_class(f, original.targets, r) < 0) return;  // probability targets ignore no row
  }
  fusedloss_cross_entropy_params q = p;
  store_raw(q.reduction, FUSEDLOSS_REDUCTION_NONE);
  fuzz_case g = f;
  g.reduction = FUSEDLOSS_REDUCTION_NONE;
  buffers by_index = original;
  by_index.lse_is_input = false;
  by_index.lse.allocate(false, FUSEDLOSS_FLOAT64, 0);
  by_index.loss.allocate(true, FUSEDLOSS_FLOAT64, f.count);
  by_index.z_loss.allocate(false, FUSEDLOSS_FLOAT64, 0);
  by_index.grad_loss.allocate(true, FUSEDLOSS_FLOAT64, f.count);
  for (int64_t i = 0; i < f.count; ++i) by_index.grad_loss.set(i, 1.0);
  buffers by_probability = by_index;
  by_probability.targets.allocate(true, FUSEDLOSS_FLOAT64, f.count * f.classes);
  for (int64_t r = 0; r < f.count; ++r) {
    const int64_t n = r / f.spatial, s = r % f.spatial, y = row_class(f, original.targets, r);
    by_probability.targets.set((n * f.classes + y) * f.spatial + s, 1.0);
  }
  fusedloss_cross_entropy_params qp = q;
  store_raw(qp.targets_dtype, FUSEDLOSS_FLOAT64);
  const double tol = 1e-11 * (1.0 + static_cast<double>(f.classes));
  const writes w = expected_writes(g, fusedloss::call::forward, by_index);
  const trial<fusedloss_cross_entropy_params> li =
      run(g, fusedloss::call::forward, q, by_index, kPoison, workspace, 0);
  const trial<fusedloss_cross_entropy_params> lp =
      run(g, fusedloss::call::forward, qp, by_probability, kPoison, workspace, 0);
  expect_close(f, written_values(li.b.loss, w.loss), written_values(lp.b.loss, w.loss), tol,
               "loss by index against by one-hot probability");
  if (!original.grad.given && !original.in_place) return;
  g.call = fusedloss::call::backward;
  const std::vector<char> wg = expected_writes(g, fusedloss::call::backward, by_index).grad;
  const trial<fusedloss_cross_entropy_params> gi =
      run(g, fusedloss::call::backward, q, by_index, kPoison, workspace, 0);
  const trial<fusedloss_cross_entropy_params> gp =
      run(g, fusedloss::call::backward, qp, by_probability, kPoison, workspace, 0);
  expect_close(f, written_values(gi.b.grad_view(), wg), written_values(gp.b.grad_view(), wg), tol,
               "gradient by index against by one-hot probability");
}

// forward_backward against forward and backward; the three reductions against each other.
template <class P>
void check_relations(const fuzz_case& f, const P& p, const trial<P>& done, const buffers& original,
                     std::vector<unsigned char>& workspace) {
  if (f.call == fusedloss::call::forward_backward) {
    buffers with_loss = original;
    with_loss.loss.allocate(true, f.loss_dtype(), f.loss_values());
    const trial<P> fw = run(f, fusedloss::call::forward, p, with_loss, kPoison, workspace, 0);
    f.require(fw.status == done.status, "forward's status is not forward_backward's");
    f.require(!done.b.loss.given || fw.b.loss.bytes == done.b.loss.bytes,
              "forward_backward's loss is not forward's");
    f.require(fw.b.z_loss.bytes == done.b.z_loss.bytes,
              "forward_backward's z-loss isn't forward's");
    f.require(fw.b.lse.bytes == done.b.lse.bytes, "forward_backward's LSE is not forward's");

    // backward from the same upstream value as a grad_loss (when the loss dtype holds it
    // exactly), without a saved LSE: forward_backward computes its own.
    double upstream = f.grad_scale;
    if (original.grad_scale.given) upstream *= original.grad_scale.value(0);
    buffers up = original;
    up.lse_is_input = true;
    up.lse.allocate(false, f.loss_dtype(), 0);
    up.grad_loss.allocate(true, f.loss_dtype(), f.loss_values());
    bool exact = true;
    for (int64_t i = 0; i < up.grad_loss.count; ++i) {
      up.grad_loss.set(i, upstream);
      exact = exact && up.grad_loss.value(i) == upstream;
    }
    if (exact) {
      const trial<P> bw = run(f, fusedloss::call::backward, p, up, kPoison, workspace, 0);
      f.require(bw.status == done.status, "backward's status is not forward_backward's");
      f.require(bw.b.grad_view().bytes == done.b.grad_view().bytes,
                "forward_backward's gradient is not backward's from the same upstream value");
    }
  }
  if constexpr (!std::is_same_v<P, fusedloss_bce_params> &&
                !std::is_same_v<P, fusedloss_sigmoid_focal_params> &&
                !std::is_same_v<P, fusedloss_mse_params>) {
    if (f.moderate && f.logits_dtype == FUSEDLOSS_FLOAT64) {
      check_saved_lse(f, p, original, workspace);
      if constexpr (std::is_same_v<P, fusedloss_cross_entropy_params>) {
        check_one_hot(f, p, original, workspace);
      }
    }
  }
  if (f.call == fusedloss::call::backward) return;

  // sum is the sum of none's values and mean sum / D, over forwards given every output.
  const auto forward_with = [&](int reduction) {
    P q = p;
    store_raw(q.reduction, reduction);
    fuzz_case g = f;
    g.reduction = reduction;
    buffers b = original;
    b.loss.allocate(true, f.loss_dtype(), g.loss_values());
    b.z_loss.allocate(b.z_loss.given, f.loss_dtype(), g.loss_values());
    trial<P> t = run(g, fusedloss::call::forward, q, b, kPoison, workspace, 0);
    f.require(t.status == done.status, "a forward under another reduction returned another status");
    return t;
  };
  const trial<P> none = forward_with(FUSEDLOSS_REDUCTION_NONE);
  const trial<P> sum = forward_with(FUSEDLOSS_REDUCTION_SUM);
  const trial<P> mean = forward_with(FUSEDLOSS_REDUCTION_MEAN);
  const double d = normaliser(f, original);
  const auto compare = [&](const block& each, const block& total, const block& avg,
                           const std::string& what) {
    if (!each.given) return;
    double want = 0, magnitude = 0;
    for (int64_t i = 0; i < each.count; ++i) {
      want += each.value(i);
      magnitude += std::fabs(each.value(i));
    }
    const double got_sum = total.value(0), got_mean = avg.value(0);
    const double spacing = subnormal_spacing(f);
    f.require(!(std::isfinite(magnitude) && magnitude < 1e30) ||
                  close(f, got_sum, want, magnitude, (each.count + 1) * spacing),
              what + ": sum " + std::to_string(got_sum) + ", none adds to " + std::to_string(want));
    if (d == 0) {
      f.require(empty_mean_value(f, got_mean), what + ": empty mean " + std::to_string(got_mean));
    } else if (std::isfinite(got_sum) && std::fabs(got_sum) < 1e30 &&
               std::fabs(got_sum / d) < 1e30) {
      // The mean rounds once; the sum it is compared with did too, an error that 1/D scales.
      f.require(
          close(f, got_mean, got_sum / d, std::fabs(got_sum / d), spacing + spacing / std::fabs(d)),
          what + ": mean " + std::to_string(got_mean) + ", sum / D " + std::to_string(got_sum / d));
    }
  };
  compare(none.b.loss, sum.b.loss, mean.b.loss, "loss");
  compare(none.b.z_loss, sum.b.z_loss, mean.b.z_loss, "z-loss");
}

template <class P>
void fuzz_loss(source& s, fuzz_case& f) {
  using api = fusedloss::c_api<P>;
  P p;
  api::init(&p);
  buffers b;
  values v{s, f.moderate};
  if (!generate(s, v, f, p, b)) return;
  f.what = std::string(api::name) +
           (f.rows ? " N=" + std::to_string(f.batch) + " C=" + std::to_string(f.classes) +
                         " S=" + std::to_string(f.spatial)
                   : " M=" + std::to_string(f.count));
  if (f.rows && !f.index_targets) f.what += " probability targets";
  if (f.why != nullptr) f.what += std::string(", refused for ") + f.why;

  // The workspace: the CPU path ignores it, so never writes it; CUDA's must be 8-byte aligned.
  std::vector<unsigned char> workspace(64, kWorkspaceFill);
  const size_t offset = s.choose(4) == 0 ? 1 + s.choose(7) : 0;
  f.misaligned_workspace = offset % 8 != 0;
  const bool null_p = s.choose(64) == 0;

  if (!f.call) {
    check_workspace_query(s, f, p, null_p);
    return;
  }
  const fusedloss::call c = *f.call;
  if (null_p) {
    check_null_params<P>(f, fusedloss::entry_point<P>(c), workspace);
    return;
  }

  const trial<P> first = run(f, c, p, b, kPoison, workspace, offset);
  check_error(f, first.status, first.err);
  check_workspace_untouched(f, workspace);
  fusedloss_status want = FUSEDLOSS_INVALID_ARGUMENT;
  if (f.valid && f.cuda) {
    want = f.misaligned_workspace ? FUSEDLOSS_INVALID_ARGUMENT : FUSEDLOSS_NOT_IMPLEMENTED;
  } else if (f.valid) {
    want = invalid_targets(f, b.targets) > 0 ? FUSEDLOSS_INVALID_TARGET : FUSEDLOSS_SUCCESS;
  }
  f.require(first.status == want, "returned " + std::to_string(first.status) + " (" +
                                      (f.use_err && first.err.argument ? first.err.argument : "") +
                                      "), not " + std::to_string(want));
  if (want != FUSEDLOSS_SUCCESS && want != FUSEDLOSS_INVALID_TARGET) {
    // A refused call writes nothing: every byte of every buffer as it was, poison included.
    buffers unchanged = b;
    unchanged.poison(kPoison);
    const auto was = unchanged.named(), is = first.b.named();
    for (size_t k = 0; k < was.size(); ++k) {
      f.require(was[k].second->bytes == is[k].second->bytes,
                std::string("a refused call changed ") + is[k].first);
    }
    return;
  }
  check_outputs(f, c, b, first.b, kPoison);
  const trial<P> second = run(f, c, p, b, kOtherPoison, workspace, offset);
  f.require(second.status == first.status, "a second run returned another status");
  check_same_bits(f, first.b, second.b);
  if (f.moderate) check_finite(f, c, first.b);
  check_relations(f, p, first, b, workspace);
}

template void fuzz_loss<fusedloss_bce_params>(source& s, fuzz_case& f);
template void fuzz_loss<fusedloss_sigmoid_focal_params>(source& s, fuzz_case& f);
template void fuzz_loss<fusedloss_mse_params>(source& s, fuzz_case& f);
template void fuzz_loss<fusedloss_cross_entropy_params>(source& s, fuzz_case& f);
template void fuzz_loss<fusedloss_softmax_focal_params>(source& s, fuzz_case& f);

}  // namespace fuzz
