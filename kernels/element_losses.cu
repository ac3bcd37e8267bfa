// Element losses on the GPU: BCE with logits, sigmoid focal, MSE.
//
// Algorithm. One grid-stride pass over the M elements, the loss fixed at compile time. Each thread
// takes chunks of 16 / sizeof(T) elements (T the logits' type: 4 for float32, 8 for 16-bit), loads
// logits, targets and a per-element weight with 16-byte vector loads (two chunks' worth before it
// computes either, where the registers allow), computes each element's loss and d loss / dx in
// float32, and stores the gradient (and, under `none`, the per-element loss) with 16-byte stores.
// The chunks are walked in slabs of at most 2^28, each addressed by 32-bit indices from its own
// base pointers, so that an access costs one multiply-add. Lean copies of the loop serve the
// common call (no weights, one upstream value; for sigmoid focal gamma = 2, and any other integer
// gamma); per-class vectors are indexed through a class cursor that the grid stride advances, not
// by a division an element. Lean bfloat16 BCE and gamma = 2 sigmoid focal (bfloat16 targets) in
// calls of element_lookup_from() elements or more take a kernel of their own, which reads
// sigma(-|x|) and log(1 + exp(-|x|)) from a 32 KB table of the bfloat16 magnitudes in shared
// memory, filled once a block, in place of the exponential, reciprocal and log1p series. Elements
// before the logits' first 16-byte boundary and after the last whole chunk go through the same
// code one at a time; if the other arrays are not aligned at the same element the whole pass is
// element by element. Under `sum`/`mean` each thread adds its chunks' float32 sums into a double,
// reduced per block and then in a fixed-order one-block pass (detail/reduce.cuh): deterministic,
// no atomics.
//
// Bytes moved (fused forward+backward, the training call): logits and targets read once, the
// per-element weight read once when there is one, the gradient written once; per-class vectors
// (weight, pos_weight) are C floats that stay in L1/L2. Under `none` the loss is written once more
// (4 bytes an element); under `sum`/`mean` 8 bytes a block go to the workspace. The upstream
// gradient is a device scalar (or one value an element under `none`), read once per thread. The
// lookup kernel's table is computed on the chip, not read from memory.
//
// Stability. softplus(±t) = max(±t, 0) + log1p(exp(-|t|)) and a two-sided sigmoid, from one
// exp(-|t|), never overflow; the one factor that can be infinite, |t|, is skipped when its
// coefficient (the weight included) is exactly 0, so an infinite logit beside a zero target or a
// zero weight gives 0, not NaN. Focal loss forms 1 - p_t as sigma(x)(1 - y) + sigma(-x) y (no
// cancellation); for an integer gamma its gradient has no negative power of 1 - p_t, and for a
// real gamma at hard targets it takes the form without one, so it stays finite for gamma in
// (0, 1) at saturated logits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>

#include "detail/device.hpp"
#include "detail/online_softmax.cuh"
#include "detail/reduce.cuh"
#include "detail/storage.cuh"
#include "detail/vector_io.cuh"
#include "element_losses.hpp"

namespace fusedloss::kernels {
namespace {

using detail::load_chunk;
using detail::store_chunk;

constexpr int kThreads = 256;
// Resident blocks an SM is built for. MSE's arithmetic fits 64 registers with four 16-byte loads
// in flight (1024 threads an SM). BCE and sigmoid focal get 80 (768 threads): at 64, ptxas issues
// BCE's second chunk's loads only after the first chunk's arithmetic, and spills sigmoid focal.
// 768 threads with four 16-byte loads each keep 48 KB an SM in flight, 3.4 times what Little's
// law asks of 6-byte elements at 4.3 TB/s (docs/performance.md).
constexpr int blocks_per_sm(element_loss k) { return k == element_loss::mse ? 4 : 3; }

struct value_and_grad {
  float loss;
  float grad;
};

// addend + log(1 + e) for e in [0, 1], branch-free: 2 atanh(s) with s = e / (2 + e) in [0, 1/3],
// as s times a degree-4 polynomial in s^2 whose coefficients a Remez exchange fitted for the least
// largest relative error on [0, 1/9] (4e-9 before float32 rounding; 2.2e-7 after, the division's
// 2 ulp included: what the Taylor series to s^15 gave, in four fewer instructions), its last
// product fused with the addend. Exact at e = 0, NaN for a NaN e.
__device__ __forceinline__ float log1p_unit(float e, float addend) {
  const float s = __fdividef(e, 2.0f + e);
  const float z = s * s;
  float poly = 0.2817833423614502f;
  poly = fmaf(poly, z, 0.27960601449012756f);
  poly = fmaf(poly, z, 0.40024909377098083f);
  poly = fmaf(poly, z, 0.6666631698608398f);
  poly = fmaf(poly, z, 2.0f);
  return fmaf(s, poly, addend);
}

// The functions of a logit x that the losses use. softplus(±x) = max(±x, 0) + log(1 + exp(-|x|)),
// whose second term never overflows, and sigma(±x) is each formed directly, never as 1 - the other.
// Two kinds hold them: series_logistic (from one exp(-|x|), its reciprocal and a series) and
// table_logistic (one entry of a shared-memory table, for bfloat16 logits in large calls); each
// forms the two-sided combinations b sigma(x) ± a sigma(-x) in the fewest instructions its values
// allow.
struct logistic_common {
  float magnitude;  // |x|
  float log1p;      // log(1 + exp(-|x|))
  float spread;     // sigma(x) sigma(-x)
  bool positive;    // x >= 0
};

// sigma(±x) as u = sigma(|x|) and e u, e = exp(-|x|).
struct series_logistic : logistic_common {
  float decay;    // e, in [0, 1]
  float inverse;  // u
  // sigma(x) and sigma(-x)
  __device__ float sigmoid() const { return positive ? inverse : decay * inverse; }
  __device__ float complement() const { return positive ? decay * inverse : inverse; }
  // b sigma(x) - a sigma(-x) and b sigma(x) + a sigma(-x), as u (b ∓ a e) for x >= 0 and
  // u (b e ∓ a) below: one product of u after a fused multiply-add.
  __device__ float difference(float b, float a) const {
    return inverse * (positive ? fmaf(-a, decay, b) : fmaf(b, decay, -a));
  }
  __device__ float sum(float b, float a) const {
    return inverse * (positive ? fmaf(a, decay, b) : fmaf(b, decay, a));
  }
};

// The series source: EX2 for e, one reciprocal, log1p_unit.
struct series_source {
  __device__ __forceinline__ series_logistic operator()(float x) const {
    const float e = detail::fast_exp2(-fabsf(x) * detail::kLog2e);
    const float u = __fdividef(1.0f, 1.0f + e);
    return {{fabsf(x), log1p_unit(e, 0.0f), e * u * u, x >= 0.0f}, e, u};
  }
};

// sigma(±x) from the table's sigma(-|x|), placed by the sign of x.
struct table_logistic : logistic_common {
  float sigmoid_of_x;     // sigma(x)
  float complement_of_x;  // sigma(-x)
  // One multiply-add each after a common product a sigma(-x).
  __device__ float difference(float b, float a) const {
    return fmaf(b, sigmoid_of_x, -(a * complement_of_x));
  }
  __device__ float sum(float b, float a) const {
    return fmaf(b, sigmoid_of_x, a * complement_of_x);
  }
};

// The lookup: a bfloat16 is exactly a float32 whose low 16 bits are 0, so there are 32768 logit
// magnitudes t, and sigma(-t) and log(1 + exp(-t)) are read from an entry a magnitude, in shared
// memory, in place of EX2, RCP and log1p_unit's series; sigma(t) is 1 - sigma(-t), exact to half
// an ulp since sigma(-t) <= 1/2. Below 2^-25 every value rounds to its value at 2^-25, and from
// 104 on (infinity included) exp(-t) rounds to 0, so 4049 magnitudes and a NaN entry make the
// table: 31.6 KB. Two values an entry, not four with sigma(t) and the product: an 8-byte LDS of
// data-dependent entries costs about half the shared-memory wavefronts of a 16-byte one
// (docs/performance.md).
namespace lookup {
constexpr uint32_t kFirst = 0x3300;           // bfloat16 bits of 2^-25
constexpr uint32_t kLast = 0x42d0;            // of 104
constexpr int kEntries = kLast - kFirst + 2;  // and the NaN entry
constexpr size_t kBytes = kEntries * sizeof(float2);
// One block an SM, so that the table is filled once an SM; 80 registers a thread, as the
// series kernel's 3 blocks of 256.
constexpr int kThreads = 768;
}  // namespace lookup

// Entry i, for t the bfloat16 of bits kFirst + i: (sigma(-t), log(1 + exp(-t))), from float32's
// expf and log1pf (within 2 ulp each: the series' accuracy or better); the last entry is NaN.
__device__ void fill_lookup(float2* table) {
  for (int i = threadIdx.x; i < lookup::kEntries; i += blockDim.x) {
    const float t = __uint_as_float((lookup::kFirst + i) << 16);
    const float e = i < lookup::kEntries - 1 ? expf(-t) : NAN;
    table[i] = make_float2(e / (1.0f + e), log1pf(e));
  }
}

// The table source: one shared-memory entry an element.
struct table_source {
  const float2* table;  // shared memory, filled by fill_lookup
  __device__ __forceinline__ table_logistic operator()(float x) const {
    // |x| clamped to the table's range by a max and a min that keep a NaN (sm_80), whose bits
    // then exceed every number's: one more min sends it to the NaN entry.
    float c;
    asm("max.NaN.f32 %0, %1, 0f33000000;" : "=f"(c) : "f"(fabsf(x)));
    asm("min.NaN.f32 %0, %0, 0f42d00000;" : "+f"(c));
    const uint32_t bits = min(__float_as_uint(c), (lookup::kLast + 1) << 16);
    // The entry's byte offset is the bits shifted by 16 - 3, their low 16 being 0.
    const float2 t = *reinterpret_cast<const float2*>(reinterpret_cast<const char*>(table) +
                                                      (bits >> 13) - lookup::kFirst * 8);
    const float v = t.x;       // sigma(-|x|)
    const float u = 1.0f - v;  // sigma(|x|)
    const bool positive = x >= 0.0f;
    return {{fabsf(x), t.y, u * v, positive}, positive ? u : v, positive ? v : u};
  }
};

// The loss a softplus(-x) + b softplus(x) with the terms' coefficients a = w pw y and b = w (1 - y)
// (docs/SEMANTICS.md), written as (a + b) log(1 + e) + (x >= 0 ? b : a) |x| with e = exp(-|x|): |x|
// is the only factor that can be infinite, and its coefficient is its term's, so the product is
// skipped when that is exactly 0 (a NaN logit still gives NaN through the first term). a + b is
// formed as w (1 + (pw - 1) y), exactly 1 without weights (kUnitWeights: w = pw = 1, not read).
// The gradient b sigma(x) - a sigma(-x) = w [sigma(x)(1 + (pw - 1) y) - pw y], from the two
// sigmoids: a confident positive does not cancel, and both infinities with the matching target give
// exactly 0.
template <bool kUnitWeights, class Logistic>
__device__ __forceinline__ value_and_grad bce(const Logistic& l, float y, float w, float pw) {
  const float a = kUnitWeights ? y : w * pw * y;
  const float b = kUnitWeights ? 1.0f - y : w * (1.0f - y);
  const float own = l.positive ? b : a;  // the |x| term's coefficient
  float loss = l.log1p;
  if constexpr (!kUnitWeights) loss *= w * fmaf(pw - 1.0f, y, 1.0f);
  if (own != 0.0f) loss = fmaf(own, l.magnitude, loss);
  return {loss, l.difference(b, a)};
}

// How a sigmoid focal loop raises 1 - p_t to gamma: gamma = 2 (the default) by one product, an
// integer gamma in [0, 15] by integer_power, any other by powf.
enum class focus_power { two, integer, real };

// m^n for n in [0, 15] by squaring: four steps, no loop and no branch (0^0 = 1).
__device__ __forceinline__ float integer_power(float m, int n) {
  float result = 1.0f;
#pragma unroll
  for (int bit = 0; bit < 4; ++bit) {
    result = (n >> bit) & 1 ? result * m : result;
    m *= m;
  }
  return result;
}

// Loss alpha_t m^gamma ce and gradient
// alpha_t [m^gamma (p - y) - gamma m^(gamma-1) (2y - 1) p (1 - p) ce] with m = 1 - p_t
// (docs/SEMANTICS.md). For an integer gamma the form is branch-free: m^(gamma-1) has no negative
// power there (gamma = 0 drops its term). A real gamma in (0, 1) can overflow
// m^(gamma - 1) at a hard target, where the form with m^gamma p_t in its place is used.
template <focus_power kPower, class Logistic>
__device__ __forceinline__ value_and_grad sigmoid_focal(const Logistic& l, float y,
                                                        const focal_constants& f) {
  const value_and_grad ce = bce<true>(l, y, 1.0f, 1.0f);  // ce.grad is p - y
  const float m = l.sum(1.0f - y, y);                     // 1 - p_t, without cancellation
  const float alpha_t = fmaf(f.alpha_y, y, f.alpha_0);
  // gamma (2y - 1) p (1 - p) ce
  const float slope =
      (kPower == focus_power::two ? fmaf(4.0f, y, -2.0f) : fmaf(f.gamma_y, y, -f.gamma)) *
      l.spread * ce.loss;
  if constexpr (kPower == focus_power::two) {
    // alpha_t m (m (p - y) - slope): one product fewer than the general form below.
    const float scale = alpha_t * m;
    return {scale * m * ce.loss, scale * fmaf(m, ce.grad, -slope)};
  } else if constexpr (kPower == focus_power::integer) {
    const float lower = integer_power(m, f.lower_exponent);
    const float focus = f.gamma != 0.0f ? lower * m : 1.0f;
    // gamma = 0 drops the slope term, whose 0 * inf would turn an infinite logit's gradient into
    // NaN (as BCE's does not).
    const float focus_slope = f.gamma != 0.0f ? lower * slope : 0.0f;
    return {alpha_t * focus * ce.loss, alpha_t * fmaf(focus, ce.grad, -focus_slope)};
  } else {
    const float focus = powf(m, f.gamma);
    const float loss = alpha_t * focus * ce.loss;
    if (f.gamma == 0.0f) return {loss, alpha_t * ce.grad};
    if (y == 0.0f || y == 1.0f) {
      // m^(gamma - 1) p (1 - p) = m^gamma p_t for hard targets: no negative power to overflow.
      const float p_t = y == 1.0f ? l.sigmoid() : l.complement();
      return {loss, alpha_t * focus * (ce.grad - (2.0f * y - 1.0f) * f.gamma * p_t * ce.loss)};
    }
    return {loss, alpha_t * (focus * ce.grad - powf(m, f.gamma - 1.0f) * slope)};
  }
}

// The upstream gradient every element's d loss / dx is multiplied by (mean's 1/M included), when
// it is one value; per-element upstream values (backward under `none`) are read beside the data.
__device__ __forceinline__ float scalar_upstream(const element_problem& p) {
  float g = p.grad_loss != nullptr
                ? *p.grad_loss
                : p.grad_scale * (p.grad_scale_ptr != nullptr ? *p.grad_scale_ptr : 1.0f);
  if (p.reduction == FUSEDLOSS_REDUCTION_MEAN)
    g = static_cast<float>(g / static_cast<double>(p.numel));
  return g;
}

// The inputs of N elements starting at element i, loaded before any is used.
template <int N>
struct element_inputs {
  float x[N], y[N], w[N], pw[N], g[N];
};

// Where a thread is in the per-class vectors: the class of its next element, advanced by the
// grid stride without a division per element.
struct class_cursor {
  int64_t classes;
  int64_t at;  // class of element i
  __device__ int64_t plus(int k) const {
    int64_t c = at + k;
    while (c >= classes) c -= classes;
    return c;
  }
  __device__ void advance(int64_t step) {  // step < classes
    at += step;
    if (at >= classes) at -= classes;
  }
};

// kLean: no weight, no pos_weight, one upstream value (the common call): nothing but the logits
// and targets is read.
template <int N, class T, class U, element_loss K, bool kLean, class I>
__device__ __forceinline__ void load_inputs(const element_problem& p, I i, float upstream,
                                            bool per_element_upstream, const class_cursor& cls,
                                            element_inputs<N>& in) {
  load_chunk(static_cast<const T*>(p.logits) + i, in.x);
  load_chunk(static_cast<const U*>(p.targets) + i, in.y);
#pragma unroll
  for (int k = 0; k < N; ++k) {
    in.w[k] = 1.0f;
    in.pw[k] = 1.0f;
    in.g[k] = upstream;
  }
  if constexpr (kLean) return;
  if constexpr (K == element_loss::bce) {
    if (p.weight != nullptr) {
      if (p.weight_per_class) {
#pragma unroll
        for (int k = 0; k < N; ++k) in.w[k] = __ldg(p.weight + cls.plus(k));
      } else {
        load_chunk(p.weight + i, in.w);
      }
    }
    if (p.pos_weight != nullptr) {
#pragma unroll
      for (int k = 0; k < N; ++k) in.pw[k] = __ldg(p.pos_weight + cls.plus(k));
    }
  }
  if (per_element_upstream) load_chunk(p.grad_loss + i, in.g);
}

// Computes and stores the N elements at i; returns their loss sum (float32 within the chunk,
// added to the thread's double sum by the caller). kLean as in load_inputs; kPower: how sigmoid
// focal raises 1 - p_t to gamma (ignored by the other losses); `source` forms each logit's
// logistic (series_source or table_source).
template <int N, class T, element_loss K, bool kLean, focus_power kPower, class Source, class I>
__device__ __forceinline__ float compute_and_store(const element_problem& p,
                                                   const focal_constants& f, const Source& source,
                                                   I i, const element_inputs<N>& in) {
  float loss[N], grad[N];
#pragma unroll
  for (int k = 0; k < N; ++k) {
    value_and_grad v;
    if constexpr (K == element_loss::bce) {
      v = bce<kLean>(source(in.x[k]), in.y[k], in.w[k], in.pw[k]);
    } else if constexpr (K == element_loss::sigmoid_focal) {
      v = sigmoid_focal<kPower>(source(in.x[k]), in.y[k], f);
    } else {
      const float d = in.x[k] - in.y[k];
      v = {d * d, 2.0f * d};
    }
    loss[k] = v.loss;
    grad[k] = v.grad * in.g[k];
  }
  if (p.grad != nullptr) store_chunk(static_cast<T*>(p.grad) + i, grad);
  if (p.loss != nullptr && p.reduction == FUSEDLOSS_REDUCTION_NONE) store_chunk(p.loss + i, loss);
  return detail::tree_sum(loss);
}

// Chunks a slab holds at most: its element indices (at most 8 a chunk) fit 32 bits, so that an
// access costs one multiply-add from the slab's base, not 64-bit index arithmetic.
constexpr int64_t kSlabChunks = int64_t{1} << 28;

// `p + first` with `first` opaque to the optimiser: left to itself it folds the slab's base back
// into every access as 64-bit index arithmetic (base + (first + i) * size), which is what slabs
// remove. The pointer itself stays derived from p, so that its accesses remain global ones.
template <class T>
__device__ __forceinline__ T* slab_base(T* p, int64_t first) {
  int64_t bytes = first * static_cast<int64_t>(sizeof(T));
  asm("mov.b64 %0, %0;" : "+l"(bytes));
  using byte = std::conditional_t<std::is_const_v<T>, const char, char>;
  return reinterpret_cast<T*>(reinterpret_cast<byte*>(p) + bytes);
}

// p with its per-element arrays advanced to element `first` (per-class vectors, a reduced loss
// and a scalar upstream value stay where they are).
template <class T, class U>
__device__ __forceinline__ element_problem advanced(const element_problem& p, int64_t first,
                                                    bool per_element_upstream) {
  element_problem q = p;
  q.logits = slab_base(static_cast<const T*>(p.logits), first);
  q.targets = slab_base(static_cast<const U*>(p.targets), first);
  if (p.grad != nullptr) q.grad = slab_base(static_cast<T*>(p.grad), first);
  if (p.loss != nullptr && p.reduction == FUSEDLOSS_REDUCTION_NONE) {
    q.loss = slab_base(p.loss, first);
  }
  if (p.weight != nullptr && !p.weight_per_class) q.weight = slab_base(p.weight, first);
  if (per_element_upstream) q.grad_loss = slab_base(p.grad_loss, first);
  return q;
}

// The whole chunks of one thread, slab by slab: kUnroll chunks' inputs loaded before any is
// computed (so that their loads are in flight together), then one at a time for the rest.
// Returns the loss sum. kBlock: the block's threads.
template <class T, class U, element_loss K, bool kLean, focus_power kPower, int kBlock,
          class Source>
__device__ __forceinline__ double chunk_loop(const element_problem& p, const Source& source,
                                             int64_t head, int64_t chunks, float upstream,
                                             bool per_element_upstream, int64_t classes) {
  constexpr int N = detail::kVectorBytes / sizeof(T);
  // The kernel parameter's own (constant space): `q` below is a copy, its constants registers.
  const focal_constants& f = p.focal;
  // Float32, or a lean call: two chunks a turn (4 loads or more in flight); a 16-bit chunk's eight
  // elements with their options fill the registers alone.
  constexpr int kUnroll = sizeof(T) == 4 || kLean ? 2 : 1;
  // The lookup kernel's turns are rotated: a turn's loads are issued at the end of the turn before
  // it, so that the loop's back branch parts them from the turn's arithmetic. In one basic block
  // with it, ptxas starts the first chunk's lookups after three of the four loads, and the fourth
  // waits for the first to arrive.
  constexpr bool kRotated = std::is_same_v<Source, table_source>;
  // Sigmoid focal's series arithmetic on two 16-bit chunks at once would spill, so its lean loop
  // loads two chunks and computes them one after the other in a loop of two trips (unrolled, ptxas
  // would issue the second chunk's loads only after the first chunk's arithmetic).
  constexpr bool kOneByOne =
      !kRotated && kLean && K == element_loss::sigmoid_focal && sizeof(T) == 2;
  const uint32_t thread = blockIdx.x * kBlock + threadIdx.x;
  const uint32_t stride = gridDim.x * kBlock;
  const int64_t cls_step = int64_t{stride} * N % classes;  // how far the stride moves the class
  double sum = 0;
  for (int64_t first = 0; first < chunks; first += kSlabChunks) {
    const int64_t first_element = head + first * N;
    const element_problem q = advanced<T, U>(p, first_element, per_element_upstream);
    const auto count =
        static_cast<uint32_t>(chunks - first < kSlabChunks ? chunks - first : kSlabChunks);
    class_cursor cls{classes, (first_element + int64_t{thread} * N) % classes};
    const auto whole_turn = [&](uint32_t at) { return at + (kUnroll - 1) * stride < count; };
    element_inputs<N> in[kUnroll];
    const auto load_turn = [&](uint32_t at) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        load_inputs<N, T, U, K, kLean>(q, (at + u * stride) * N, upstream, per_element_upstream,
                                       cls, in[u]);
        cls.advance(cls_step);
      }
    };
    const auto compute_turn = [&](uint32_t at) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        sum +=
            compute_and_store<N, T, K, kLean, kPower>(q, f, source, (at + u * stride) * N, in[u]);
      }
    };
    uint32_t c = thread;
    if constexpr (kRotated) {
      if (whole_turn(c)) load_turn(c);
      for (; whole_turn(c); c += kUnroll * stride) {
        compute_turn(c);
        if (whole_turn(c + kUnroll * stride)) load_turn(c + kUnroll * stride);
      }
    } else {
      for (; whole_turn(c); c += kUnroll * stride) {
        load_turn(c);
        if constexpr (kOneByOne) {
#pragma unroll 1
          for (int u = 0; u < kUnroll; ++u) {
            sum += compute_and_store<N, T, K, kLean, kPower>(q, f, source, (c + u * stride) * N,
                                                             in[0]);
            in[0] = in[1];
          }
        } else {
          compute_turn(c);
        }
      }
    }
    for (; c < count; c += stride) {
      element_inputs<N> in;
      load_inputs<N, T, U, K, kLean>(q, c * N, upstream, per_element_upstream, cls, in);
      cls.advance(cls_step);
      sum += compute_and_store<N, T, K, kLean, kPower>(q, f, source, c * N, in);
    }
  }
  return sum;
}

// One thread's share of the call, the block's partial sum included. With the table lookup (only
// lean bfloat16 BCE and gamma = 2 sigmoid focal take it) only the lean loop is compiled.
template <class T, class U, element_loss K, int kBlock, class Source>
__device__ __forceinline__ void element_pass(const element_problem& p, const Source& source,
                                             double* partials) {
  constexpr int N = detail::kVectorBytes / sizeof(T);
  constexpr bool kLookup = std::is_same_v<Source, table_source>;
  const bool per_element_upstream =
      p.grad_loss != nullptr && p.reduction == FUSEDLOSS_REDUCTION_NONE;
  const float upstream = p.grad != nullptr && !per_element_upstream ? scalar_upstream(p) : 1.0f;

  const int64_t aligned_from = detail::head_elements(static_cast<const T*>(p.logits));
  const int64_t head = aligned_from < p.numel ? aligned_from : p.numel;
  const bool vector_path =
      detail::aligned_at(static_cast<const U*>(p.targets), head) &&
      detail::aligned_at(static_cast<T*>(p.grad), head) &&
      (p.reduction != FUSEDLOSS_REDUCTION_NONE || detail::aligned_at(p.loss, head)) &&
      (p.weight == nullptr || p.weight_per_class || detail::aligned_at(p.weight, head)) &&
      (!per_element_upstream || detail::aligned_at(p.grad_loss, head));
  const int64_t chunks = vector_path ? (p.numel - head) / N : 0;
  const int64_t body_end = head + chunks * N;

  const int64_t classes = p.num_classes > 0 ? p.num_classes : 1;
  constexpr bool kFocal = K == element_loss::sigmoid_focal;
  const focal_constants& f = p.focal;
  const bool lean = p.weight == nullptr && p.pos_weight == nullptr && !per_element_upstream &&
                    (!kFocal || f.integer_gamma);
  double sum = 0;
  if (kLookup || (lean && (!kFocal || f.gamma == 2.0f))) {
    sum = chunk_loop<T, U, K, true, focus_power::two, kBlock>(p, source, head, chunks, upstream,
                                                              false, classes);
  } else if constexpr (!kLookup) {
    if (!lean) {
      sum = chunk_loop<T, U, K, false, focus_power::real, kBlock>(p, source, head, chunks, upstream,
                                                                  per_element_upstream, classes);
    } else if constexpr (kFocal) {
      sum = chunk_loop<T, U, K, true, focus_power::integer, kBlock>(p, source, head, chunks,
                                                                    upstream, false, classes);
    }
  }
  // The scalar elements: the head and tail around the chunks, or everything off the vector path.
  const int64_t scalar_head = vector_path ? head : p.numel;
  const int64_t tail_begin = vector_path ? body_end : p.numel;
  const int64_t scalar_count = scalar_head + (p.numel - tail_begin);
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kBlock;
  // The lookup kernel takes lean calls only; the series kernel's scalar path serves every option.
  constexpr focus_power kScalarPower = kLookup ? focus_power::two : focus_power::real;
  for (int64_t s = thread; s < scalar_count; s += stride) {
    const int64_t i = s < scalar_head ? s : tail_begin + (s - scalar_head);
    element_inputs<1> in;
    load_inputs<1, T, U, K, kLookup>(p, i, upstream, per_element_upstream, {classes, i % classes},
                                     in);
    sum += compute_and_store<1, T, K, kLookup, kScalarPower>(p, f, source, i, in);
  }
  if (partials != nullptr) detail::write_block_partial<kBlock>(sum, partials);
}

template <class T, class U, element_loss K>
__global__ void __launch_bounds__(kThreads, blocks_per_sm(K))
    element_loss_kernel(element_problem p, double* partials) {
  element_pass<T, U, K, kThreads>(p, series_source{}, partials);
}

// Lean bfloat16 BCE and gamma = 2 sigmoid focal in calls of element_lookup_from() elements or
// more: the table filled once a block (lookup::kBytes of dynamic shared memory), then the pass.
template <element_loss K>
__global__ void __launch_bounds__(lookup::kThreads, 1)
    element_lookup_kernel(element_problem p, double* partials) {
  extern __shared__ float2 table[];
  fill_lookup(table);
  __syncthreads();
  element_pass<__nv_bfloat16, __nv_bfloat16, K, lookup::kThreads>(p, table_source{table}, partials);
}

std::atomic<int64_t> lookup_from{int64_t{1} << 23};

// Whether the call takes element_lookup_kernel: lean (as element_pass's `lean`), bfloat16 logits
// and targets, and large enough.
bool takes_lookup(const element_problem& p) {
  const bool per_element_upstream =
      p.grad_loss != nullptr && p.reduction == FUSEDLOSS_REDUCTION_NONE;
  return p.logits_dtype == FUSEDLOSS_BFLOAT16 && p.targets_dtype == FUSEDLOSS_BFLOAT16 &&
         (p.kind == element_loss::bce ||
          (p.kind == element_loss::sigmoid_focal && p.focal.gamma == 2.0f)) &&
         p.weight == nullptr && p.pos_weight == nullptr && !per_element_upstream && p.numel > 0 &&
         p.numel >= lookup_from.load();
}

// The grid of a loss whose kernel is built for `resident` blocks of `threads` an SM.
cudaError_t grid_size(int64_t numel, int max_blocks, int resident, int threads, int* blocks) {
  detail::device_facts f;
  if (const cudaError_t e = detail::query_device(&f); e != cudaSuccess) return e;
  // Enough 4-element chunks for every thread, at most a full wave of resident blocks.
  *blocks = detail::grid_of((numel / 4 + threads - 1) / threads, f.sms, resident);
  if (max_blocks > 0) *blocks = std::min(*blocks, max_blocks);
  return cudaSuccess;
}

template <class T, class U>
void launch(const element_problem& p, int blocks, double* partials, cudaStream_t stream) {
  switch (p.kind) {
    case element_loss::bce:
      element_loss_kernel<T, U, element_loss::bce><<<blocks, kThreads, 0, stream>>>(p, partials);
      break;
    case element_loss::sigmoid_focal:
      element_loss_kernel<T, U, element_loss::sigmoid_focal>
          <<<blocks, kThreads, 0, stream>>>(p, partials);
      break;
    default:
      element_loss_kernel<T, U, element_loss::mse><<<blocks, kThreads, 0, stream>>>(p, partials);
  }
}

}  // namespace
cudaError_t element_workspace_bytes(int64_t numel, int max_blocks, size_t* bytes) {
  // Sized for the loss with the largest grid, so that one size serves every loss.
  int blocks = 0;
  const cudaError_t e =
      grid_size(numel, max_blocks, blocks_per_sm(element_loss::mse), kThreads, &blocks);
  if (e == cudaSuccess) *bytes = static_cast<size_t>(blocks) * sizeof(double);
  return e;
}

int64_t element_lookup_from() { return lookup_from.load(); }

int64_t set_element_lookup_from(int64_t elements) { return lookup_from.exchange(elements); }

cudaError_t run_element_loss(const element_problem& p, void* workspace, cudaStream_t stream) {
  const bool table = takes_lookup(p);
  int blocks = 0;
  cudaError_t e = table
                      ? grid_size(p.numel, p.max_blocks, 1, lookup::kThreads, &blocks)
                      : grid_size(p.numel, p.max_blocks, blocks_per_sm(p.kind), kThreads, &blocks);
  if (e != cudaSuccess) return e;
  const bool reduce = p.loss != nullptr && p.reduction != FUSEDLOSS_REDUCTION_NONE;
  double* partials = reduce ? static_cast<double*>(workspace) : nullptr;

  if (table) {
    if (p.kind == element_loss::bce) {
      element_lookup_kernel<element_loss::bce>
          <<<blocks, lookup::kThreads, lookup::kBytes, stream>>>(p, partials);
    } else {
      element_lookup_kernel<element_loss::sigmoid_focal>
          <<<blocks, lookup::kThreads, lookup::kBytes, stream>>>(p, partials);
    }
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  } else if (p.numel > 0) {
    const bool wide_targets = p.targets_dtype != p.logits_dtype;  // float32 beside 16-bit logits
    switch (p.logits_dtype) {
      case FUSEDLOSS_FLOAT16:
        wide_targets ? launch<__half, float>(p, blocks, partials, stream)
                     : launch<__half, __half>(p, blocks, partials, stream);
        break;
      case FUSEDLOSS_BFLOAT16:
        wide_targets ? launch<__nv_bfloat16, float>(p, blocks, partials, stream)
                     : launch<__nv_bfloat16, __nv_bfloat16>(p, blocks, partials, stream);
        break;
      default:
        launch<float, float>(p, blocks, partials, stream);
    }
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  if (reduce) {
    const detail::final_sum f{partials,
                              p.numel > 0 ? blocks : 0,
                              p.reduction == FUSEDLOSS_REDUCTION_MEAN,
                              static_cast<double>(p.numel),
                              nullptr,
                              p.empty_value};
    detail::final_sum_kernel<<<1, detail::kFinalThreads, 0, stream>>>(f, p.loss);
    e = cudaGetLastError();
  }
  return e;
}

}  // namespace fusedloss::kernels
