// Fused linear + cross-entropy on the GPU: the (N, V) logits never exist at once. Rows go through a
// chunk buffer in the workspace, in a fixed order; per chunk of R rows:
//   1. logits = X_chunk W^T (+ bias in the epilogue): a cuBLASLt GEMM in the input's dtype, float32
//      accumulation, into the chunk buffer;
//   2. the row kernel (row_losses.cu) in place on the buffer: the rows' losses, LSEs and, when a
//      gradient is asked for, dlogits over the logits (grad == logits);
//   3. grad_input_chunk = dlogits W (GEMM);
//   4. grad_W (+)= dlogits^T X_chunk (GEMM; beta 0 on the first chunk unless accumulating);
//   5. grad_bias (+)= the column sums of dlogits (a fixed-order kernel here).
// Row-major (m, n) data is column-major (n, m) to cuBLASLt, so in its terms (all column-major):
//   1. D(V, R) = A^T B  with A = W as (H, V), ld H, and B = X_chunk as (H, R), ld input_row_stride;
//   3. D(H, R) = A B    with A = W as (H, V) and B = dlogits as (V, R), ld V; D ld grad_row_stride;
//   4. D(H, V) = A B^T  with A = X_chunk as (H, R) and B = dlogits as (V, R); D ld H.
//
// Reductions. The mean's 1 / D is over all N rows, not a chunk's: a prepass reduces D from every
// target on the device before the first chunk, and every chunk's row kernel runs under `sum` with
// an upstream scalar already divided by D (0 when D is 0: an empty mean has a zero gradient). Each
// chunk's float32 loss and z-loss sums are added, in chunk order, into double accumulators, and a
// last one-thread kernel writes sum / D (or the empty-mean value) or the sum. Under `none` each
// chunk writes its rows' values at its offset.
//
// Determinism. Chunks run in a fixed order on one stream; every GEMM's algorithm comes from
// cublasLtMatmulAlgoGetHeuristic restricted to CUBLASLT_REDUCTION_SCHEME_NONE (no split-K, so no
// reduction through the output or atomics), chosen once per shape and call; sums are fixed-order
// (detail/reduce.cuh, and one thread per bias column).
//
// Bytes beyond the GEMMs' own operands, per logit: the chunk buffer written by GEMM 1, read and
// written by the row kernel and read by GEMMs 3 and 4 and the bias sum.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "detail/reduce.cuh"
#include "detail/storage.cuh"
#include "linear_cross_entropy.hpp"

namespace fusedloss::kernels {
namespace {

constexpr int kThreads = 256;
// The prepass's grid is fixed by N alone (at most this many blocks), so D's bits are too.
constexpr int kPrepassBlocks = 256;
// cuBLASLt's workspace: NVIDIA's recommendation for Hopper (enough for every non-split-K kernel
// its heuristic offers), a constant so that the chunk a workspace holds depends on its size alone.
constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;
constexpr size_t kAlignment = 256;  // of every region, and what cuBLASLt assumes by default

// The call's scalars, at the workspace's start.
struct scalars {
  double normaliser;  // D: the targets' total weight over counted rows (mean)
  double loss_sum;    // the chunks' loss sums, in chunk order
  double z_sum;       // the chunks' z-loss sums
  float chunk_loss;   // the current chunk's sums, from its row kernel
  float chunk_z;
  float upstream;  // every row's upstream gradient, the mean's 1 / D included
  double partials[kPrepassBlocks];
};

// `bytes` up to the next region boundary.
size_t round_up(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

// Bytes of one float32, float16 or bfloat16 element.
size_t element_size(fusedloss_dtype dtype) { return dtype == FUSEDLOSS_FLOAT32 ? 4 : 2; }

// Where each region starts: [scalars][row kernel's workspace][cuBLASLt's][chunk buffer].
struct regions {
  size_t row, gemm, chunk;
  size_t row_bytes;  // the row kernel's workspace
};

// The row kernel's forward problem for `rows` rows starting at row `first` of the call, in place
// on `chunk`, its reduced sums into `s` (both null when only sizing). Shared by the sizing and the
// launches, so that both see the same options and reduction.
row_problem chunk_rows_problem(const linear_problem& p, int64_t first, int64_t rows, void* chunk,
                               scalars* s) {
  row_problem q = p.rows;
  const bool none = p.reduction == FUSEDLOSS_REDUCTION_NONE;
  const bool outputs = p.pass != linear_pass::backward;
  float* chunk_loss = s != nullptr ? &s->chunk_loss : nullptr;
  float* chunk_z = s != nullptr ? &s->chunk_z : nullptr;
  q.batch = rows;
  q.num_classes = p.num_classes;
  q.spatial = 1;
  q.row_stride = p.num_classes;
  q.grad_row_stride = p.num_classes;
  q.logits = chunk;
  q.logits_dtype = p.dtype;
  q.targets = static_cast<const char*>(p.rows.targets) +
              first * (p.rows.targets_dtype == FUSEDLOSS_INT32 ? 4 : 8);
  q.reduction = none ? FUSEDLOSS_REDUCTION_NONE : FUSEDLOSS_REDUCTION_SUM;
  q.empty_value = p.empty_value;
  q.loss = !outputs || p.loss == nullptr ? nullptr : none ? p.loss + first : chunk_loss;
  q.lse = outputs && p.lse != nullptr ? p.lse + first : nullptr;
  q.read_lse = false;
  q.z_loss_out = !outputs || p.z_loss_out == nullptr ? nullptr
                 : none                              ? p.z_loss_out + first
                                                     : chunk_z;
  q.grad = nullptr;
  q.grad_loss = nullptr;
  q.grad_scale = 1.0f;
  q.grad_scale_ptr = nullptr;
  return q;
}

// The regions of `p`'s workspace (the chunk buffer last, from r->chunk on).
cudaError_t regions_of(const linear_problem& p, regions* r) {
  r->row = round_up(sizeof(scalars));
  r->row_bytes = 0;
  r->gemm = r->row;
  r->chunk = r->row;
  if (p.batch == 0) return cudaSuccess;  // no chunk: the scalars alone
  // The row kernel's workspace depends on the options and the reduction, not on the rows (its
  // partials are reserved for the largest grid); the full batch bounds it anyway.
  const cudaError_t e =
      row_workspace_bytes(chunk_rows_problem(p, 0, p.batch, nullptr, nullptr), &r->row_bytes);
  if (e != cudaSuccess) return e;
  r->gemm = round_up(r->row + r->row_bytes);
  r->chunk = round_up(r->gemm + kGemmWorkspaceBytes);
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------------
// The small kernels.

// Each block's share of D: weight[y] (1 without weights) over rows whose target is counted.
__global__ void __launch_bounds__(kThreads)
    normaliser_kernel(const void* targets, fusedloss_dtype targets_dtype, const float* weight,
                      int64_t n, int64_t v, int64_t ignore_index, double* partials) {
  double d = 0;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; r < n;
       r += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t y = targets_dtype == FUSEDLOSS_INT32 ? static_cast<const int32_t*>(targets)[r]
                                                       : static_cast<const int64_t*>(targets)[r];
    if (y != ignore_index && y >= 0 && y < v) d += weight != nullptr ? weight[y] : 1.0f;
  }
  detail::write_block_partial<kThreads>(d, partials);
}

// The upstream gradient every row gets: grad_loss[0] (backward) or the grad scale
// (forward_backward), divided by D under mean (the row kernel's rounding: the division in double,
// then float32).
__global__ void upstream_kernel(const float* grad_loss, float grad_scale,
                                const float* grad_scale_ptr, bool mean, scalars* s) {
  const float g = grad_loss != nullptr
                      ? grad_loss[0]
                      : grad_scale * (grad_scale_ptr != nullptr ? *grad_scale_ptr : 1.0f);
  const double d = s->normaliser;
  s->upstream = !mean ? g : d != 0 ? static_cast<float>(g / d) : 0.0f;
}

// Adds the chunk's sums to the call's, in chunk order (the stream's).
__global__ void accumulate_kernel(scalars* s, bool loss, bool z) {
  if (loss) s->loss_sum += s->chunk_loss;
  if (z) s->z_sum += s->chunk_z;
}

// The reduced loss and z-loss from the chunks' sums.
__global__ void finish_kernel(const scalars* s, bool mean, float empty_value, float* loss,
                              float* z_loss_out) {
  const double d = s->normaliser;
  const auto value = [&](double sum) {
    return !mean ? static_cast<float>(sum) : d != 0 ? static_cast<float>(sum / d) : empty_value;
  };
  if (loss != nullptr) *loss = value(s->loss_sum);
  if (z_loss_out != nullptr) *z_loss_out = value(s->z_sum);
}

// grad_bias (+)= the column sums of the chunk's dlogits, one thread a column summing its rows in
// order in double (consecutive threads read consecutive columns of a row), rounded once to O.
template <class T, class O>
__global__ void __launch_bounds__(kThreads)
    bias_gradient_kernel(const T* grad, int64_t rows, int64_t v, O* out, bool add) {
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; c < v;
       c += static_cast<int64_t>(gridDim.x) * kThreads) {
    double sum = add ? static_cast<double>(detail::to_float(out[c])) : 0.0;
    for (int64_t r = 0; r < rows; ++r) sum += detail::to_float(grad[r * v + c]);
    out[c] = detail::from_float<O>(static_cast<float>(sum));
  }
}

// The bias-gradient kernel for dlogits of type T, into float32 or T.
template <class T>
cudaError_t launch_bias_gradient(const linear_problem& p, const void* grad, int64_t rows, bool add,
                                 cudaStream_t stream) {
  const int64_t wanted = (p.num_classes + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(std::min<int64_t>(wanted, 65535));
  const T* g = static_cast<const T*>(grad);
  if (p.grad_linear_dtype == FUSEDLOSS_FLOAT32) {
    bias_gradient_kernel<<<blocks, kThreads, 0, stream>>>(
        g, rows, p.num_classes, static_cast<float*>(p.grad_linear_bias), add);
  } else {
    bias_gradient_kernel<<<blocks, kThreads, 0, stream>>>(g, rows, p.num_classes,
                                                          static_cast<T*>(p.grad_linear_bias), add);
  }
  return cudaGetLastError();
}

// Dispatches the bias-gradient kernel over the input's dtype.
cudaError_t bias_gradient(const linear_problem& p, const void* grad, int64_t rows, bool add,
                          cudaStream_t stream) {
  switch (p.dtype) {
    case FUSEDLOSS_FLOAT16:
      return launch_bias_gradient<__half>(p, grad, rows, add, stream);
    case FUSEDLOSS_BFLOAT16:
      return launch_bias_gradient<__nv_bfloat16>(p, grad, rows, add, stream);
    default:
      return launch_bias_gradient<float>(p, grad, rows, add, stream);
  }
}

// ------------------------------------------------------------------------------------------------
// cuBLASLt.

constexpr linear_status kOk{cudaSuccess, CUBLAS_STATUS_SUCCESS, nullptr, nullptr};

// A CUDA runtime failure, or success.
linear_status cuda_status(cudaError_t e) { return {e, CUBLAS_STATUS_SUCCESS, nullptr, nullptr}; }

// A cuBLASLt failure of function `call`.
linear_status blas_status(cublasStatus_t s, const char* call) {
  return {cudaSuccess, static_cast<int>(s), call, cublasLtGetStatusString(s)};
}

// Whether `s` is a failure of either kind.
bool failed(const linear_status& s) { return s.cuda != cudaSuccess || s.blas != 0; }

// One handle per device for the process's life: created on a device's first call, shared by every
// thread (the calls only read it), never destroyed (destroying it at exit could outlive the
// driver).
linear_status lt_handle(cublasLtHandle_t* handle) {
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return cuda_status(e);
  static std::mutex mutex;
  static std::vector<cublasLtHandle_t> handles;
  const std::lock_guard<std::mutex> lock(mutex);
  if (handles.size() <= static_cast<size_t>(device)) handles.resize(device + 1, nullptr);
  if (handles[device] == nullptr) {
    const cublasStatus_t s = cublasLtCreate(&handles[device]);
    if (s != CUBLAS_STATUS_SUCCESS) {
      handles[device] = nullptr;
      return blas_status(s, "cublasLtCreate");
    }
  }
  *handle = handles[device];
  return kOk;
}

// cuBLASLt's name of a storage dtype.
cudaDataType_t cuda_type(fusedloss_dtype dtype) {
  switch (dtype) {
    case FUSEDLOSS_FLOAT16:
      return CUDA_R_16F;
    case FUSEDLOSS_BFLOAT16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

// The alignment every pointer `base + k * step` (k >= 0) shares, at most kAlignment: the heuristic
// must not pick a kernel that assumes more than some chunk's operand has.
uint32_t alignment_of(const void* base, size_t step) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(base) | step | kAlignment;
  return static_cast<uint32_t>(bits & (~bits + 1));
}

// A column-major operand: its type, shape, leading dimension and the alignment of its pointers.
struct operand {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
  uint32_t alignment;
};

// D = op(A) op(B) + beta D, with the bias (length D's rows) added in the epilogue when given.
struct gemm_shape {
  bool transpose_a, transpose_b;
  operand a, b, d;
  const void* bias;
};

// One GEMM shape's descriptors (host objects) and the algorithm the heuristic chose for it.
class gemm {
 public:
  gemm() = default;
  gemm(const gemm&) = delete;
  gemm& operator=(const gemm&) = delete;
  ~gemm() {
    if (a_ != nullptr) cublasLtMatrixLayoutDestroy(a_);
    if (b_ != nullptr) cublasLtMatrixLayoutDestroy(b_);
    if (d_ != nullptr) cublasLtMatrixLayoutDestroy(d_);
    if (desc_ != nullptr) cublasLtMatmulDescDestroy(desc_);
  }

  /// Builds the descriptors and asks the heuristic for a split-K-free algorithm.
  linear_status plan(cublasLtHandle_t handle, const gemm_shape& s) {
    cublasStatus_t st = cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st != CUBLAS_STATUS_SUCCESS) return blas_status(st, "cublasLtMatmulDescCreate");
    const cublasOperation_t ta = s.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = s.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    st = cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    }
    if (st == CUBLAS_STATUS_SUCCESS && s.bias != nullptr) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      const int32_t bias_type = s.d.type;  // the bias is in the output's (the input's) dtype
      st = cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                          sizeof epilogue);
      if (st == CUBLAS_STATUS_SUCCESS) {
        // The heuristic reads the pointer's value for its alignment.
        st = cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &s.bias,
                                            sizeof s.bias);
      }
      if (st == CUBLAS_STATUS_SUCCESS) {
        st = cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                            sizeof bias_type);
      }
    }
    if (st != CUBLAS_STATUS_SUCCESS) return blas_status(st, "cublasLtMatmulDescSetAttribute");
    st = cublasLtMatrixLayoutCreate(&a_, s.a.type, s.a.rows, s.a.cols, s.a.ld);
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatrixLayoutCreate(&b_, s.b.type, s.b.rows, s.b.cols, s.b.ld);
    }
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatrixLayoutCreate(&d_, s.d.type, s.d.rows, s.d.cols, s.d.ld);
    }
    if (st != CUBLAS_STATUS_SUCCESS) return blas_status(st, "cublasLtMatrixLayoutCreate");
    return choose_algorithm(handle, s);
  }

  /// Enqueues D = op(A) op(B) + beta D on `stream` (C is D).
  linear_status run(cublasLtHandle_t handle, const void* a, const void* b, void* d, float beta,
                    void* workspace, cudaStream_t stream) const {
    const float alpha = 1.0f;
    const cublasStatus_t st = cublasLtMatmul(handle, desc_, &alpha, a, a_, b, b_, &beta, d, d_, d,
                                             d_, &algo_, workspace, kGemmWorkspaceBytes, stream);
    return st == CUBLAS_STATUS_SUCCESS ? kOk : blas_status(st, "cublasLtMatmul");
  }

 private:
  linear_status choose_algorithm(cublasLtHandle_t handle, const gemm_shape& s) {
    cublasLtMatmulPreference_t preference = nullptr;
    cublasStatus_t st = cublasLtMatmulPreferenceCreate(&preference);
    if (st != CUBLAS_STATUS_SUCCESS) return blas_status(st, "cublasLtMatmulPreferenceCreate");
    const uint64_t workspace = kGemmWorkspaceBytes;
    // Only algorithms that compute each dot product in one sequence: no split-K, whose partial
    // sums meet through the output, counters or a separate reduction.
    const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_NONE;
    const struct {
      cublasLtMatmulPreferenceAttributes_t attribute;
      const void* value;
      size_t size;
    } preferences[] = {
        {CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace},
        {CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction, sizeof reduction},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &s.a.alignment, sizeof s.a.alignment},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &s.b.alignment, sizeof s.b.alignment},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &s.d.alignment, sizeof s.d.alignment},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &s.d.alignment, sizeof s.d.alignment},
    };
    for (const auto& pref : preferences) {
      if (st == CUBLAS_STATUS_SUCCESS) {
        st =
            cublasLtMatmulPreferenceSetAttribute(preference, pref.attribute, pref.value, pref.size);
      }
    }
    if (st != CUBLAS_STATUS_SUCCESS) {
      cublasLtMatmulPreferenceDestroy(preference);
      return blas_status(st, "cublasLtMatmulPreferenceSetAttribute");
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    st = cublasLtMatmulAlgoGetHeuristic(handle, desc_, a_, b_, d_, d_, preference, 1, &result,
                                        &found);
    cublasLtMatmulPreferenceDestroy(preference);
    if (st == CUBLAS_STATUS_SUCCESS && (found == 0 || result.state != CUBLAS_STATUS_SUCCESS)) {
      st = found == 0 ? CUBLAS_STATUS_NOT_SUPPORTED : result.state;
    }
    if (st != CUBLAS_STATUS_SUCCESS) return blas_status(st, "cublasLtMatmulAlgoGetHeuristic");
    algo_ = result.algo;
    return kOk;
  }

  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, d_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
};

// The three GEMMs of a chunk of `rows` rows; those the call does not run stay unplanned.
struct chunk_gemms {
  gemm logits, grad_input, grad_weight;
};

// Plans the GEMMs of a chunk of `rows` rows (chunks start every `chunk_rows` rows).
linear_status plan_chunk(cublasLtHandle_t handle, const linear_problem& p, int64_t chunk_rows,
                         int64_t rows, bool gradient, const void* chunk, chunk_gemms* g) {
  const cudaDataType_t t = cuda_type(p.dtype);
  const size_t e = element_size(p.dtype);
  const auto h = static_cast<uint64_t>(p.hidden), v = static_cast<uint64_t>(p.num_classes);
  const auto r = static_cast<uint64_t>(rows);
  // Chunks start at multiples of chunk_rows rows.
  const size_t input_step = static_cast<size_t>(chunk_rows * p.input_row_stride) * e;
  const operand weight{t, h, v, p.hidden, alignment_of(p.linear_weight, 0)};
  const operand input{t, h, r, p.input_row_stride, alignment_of(p.input, input_step)};
  const operand logits{t, v, r, p.num_classes, alignment_of(chunk, 0)};
  linear_status s = g->logits.plan(handle, {true, false, weight, input, logits, p.linear_bias});
  if (failed(s) || !gradient) return s;
  if (p.grad_input != nullptr) {
    const size_t step = static_cast<size_t>(chunk_rows * p.grad_input_row_stride) * e;
    const operand out{t, h, r, p.grad_input_row_stride, alignment_of(p.grad_input, step)};
    s = g->grad_input.plan(handle, {false, false, weight, logits, out, nullptr});
    if (failed(s)) return s;
  }
  if (p.grad_linear_weight != nullptr) {
    const operand out{cuda_type(p.grad_linear_dtype), h, v, p.hidden,
                      alignment_of(p.grad_linear_weight, 0)};
    s = g->grad_weight.plan(handle, {false, true, input, logits, out, nullptr});
  }
  return s;
}

}  // namespace

cudaError_t linear_workspace_sizes(const linear_problem& p, linear_workspace* sizes) {
  regions r{};
  const cudaError_t e = regions_of(p, &r);
  if (e != cudaSuccess) return e;
  sizes->fixed_bytes = r.chunk;
  sizes->row_bytes = static_cast<size_t>(p.num_classes) * element_size(p.dtype);
  return cudaSuccess;
}

int64_t linear_chunk_rows(const linear_workspace& sizes, int64_t batch, size_t bytes) {
  if (batch == 0 || bytes < sizes.fixed_bytes) return 0;
  const auto fits = static_cast<int64_t>(
      std::min<size_t>((bytes - sizes.fixed_bytes) / sizes.row_bytes, static_cast<size_t>(batch)));
  if (fits == 0) return 0;
  // As many chunks as the largest that fits needs, of balanced sizes: no short tail chunk that
  // runs the GEMMs at a poor shape and re-reads the weight for a few rows.
  const int64_t chunks = (batch + fits - 1) / fits;
  return (batch + chunks - 1) / chunks;
}

linear_status run_linear_cross_entropy(const linear_problem& p, void* workspace,
                                       size_t workspace_bytes, cudaStream_t stream) {
  const bool outputs = p.pass != linear_pass::backward;
  const bool gradient =
      p.pass != linear_pass::forward &&
      (p.grad_input != nullptr || p.grad_linear_weight != nullptr || p.grad_linear_bias != nullptr);
  if (!outputs && !gradient) return kOk;
  const bool none = p.reduction == FUSEDLOSS_REDUCTION_NONE;
  const bool mean = p.reduction == FUSEDLOSS_REDUCTION_MEAN;
  const bool reduced_loss = outputs && !none && p.loss != nullptr;
  const bool reduced_z = outputs && !none && p.z_loss_out != nullptr;

  regions layout{};
  cudaError_t e = regions_of(p, &layout);
  if (e != cudaSuccess) return cuda_status(e);
  linear_workspace sizes{};
  sizes.fixed_bytes = layout.chunk;
  sizes.row_bytes = static_cast<size_t>(p.num_classes) * element_size(p.dtype);
  const int64_t chunk_rows = linear_chunk_rows(sizes, p.batch, workspace_bytes);
  if (p.batch > 0 && chunk_rows == 0) return cuda_status(cudaErrorInvalidValue);
  char* base = static_cast<char*>(workspace);
  auto* s = reinterpret_cast<scalars*>(base);
  void* row_workspace = base + layout.row;
  void* gemm_workspace = base + layout.gemm;
  void* chunk = base + layout.chunk;

  // Every algorithm before the first launch: the full chunks' shape, then the last one's.
  cublasLtHandle_t handle = nullptr;
  chunk_gemms full, tail;
  const int64_t tail_rows = chunk_rows > 0 ? p.batch % chunk_rows : 0;
  if (p.batch > 0) {
    linear_status st = lt_handle(&handle);
    if (!failed(st)) st = plan_chunk(handle, p, chunk_rows, chunk_rows, gradient, chunk, &full);
    if (!failed(st) && tail_rows > 0) {
      st = plan_chunk(handle, p, chunk_rows, tail_rows, gradient, chunk, &tail);
    }
    if (failed(st)) return st;
  }

  if (reduced_loss || reduced_z) {
    e = cudaMemsetAsync(&s->loss_sum, 0, 2 * sizeof(double), stream);
    if (e != cudaSuccess) return cuda_status(e);
  }
  if (mean) {
    const int64_t wanted = (p.batch + kThreads - 1) / kThreads;
    const int blocks = static_cast<int>(std::clamp<int64_t>(wanted, 1, kPrepassBlocks));
    normaliser_kernel<<<blocks, kThreads, 0, stream>>>(p.rows.targets, p.rows.targets_dtype,
                                                       p.rows.weight, p.batch, p.num_classes,
                                                       p.rows.ignore_index, s->partials);
    detail::total_kernel<<<1, detail::kFinalThreads, 0, stream>>>(s->partials, blocks,
                                                                  &s->normaliser);
  }
  const bool row_upstream = none && p.pass == linear_pass::backward;
  if (gradient && !row_upstream && p.batch > 0) {
    upstream_kernel<<<1, 1, 0, stream>>>(p.pass == linear_pass::backward ? p.grad_loss : nullptr,
                                         p.grad_scale, p.grad_scale_ptr, mean, s);
  }
  if ((e = cudaGetLastError()) != cudaSuccess) return cuda_status(e);

  const size_t e_size = element_size(p.dtype);
  for (int64_t first = 0; first < p.batch; first += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, p.batch - first);
    const chunk_gemms& g = rows == chunk_rows ? full : tail;
    const char* x = static_cast<const char*>(p.input) + first * p.input_row_stride * e_size;

    linear_status st =
        g.logits.run(handle, p.linear_weight, x, chunk, 0.0f, gemm_workspace, stream);
    if (failed(st)) return st;

    row_problem q = chunk_rows_problem(p, first, rows, chunk, s);
    if (gradient) {
      q.grad = chunk;
      if (p.pass == linear_pass::backward) {
        q.grad_loss = row_upstream ? p.grad_loss + first : &s->upstream;
      } else {
        q.grad_scale_ptr = &s->upstream;
      }
    }
    e = run_row_loss(q, row_workspace, layout.row_bytes, stream);
    if (e != cudaSuccess) return cuda_status(e);
    if (reduced_loss || reduced_z) {
      accumulate_kernel<<<1, 1, 0, stream>>>(s, reduced_loss, reduced_z);
      if ((e = cudaGetLastError()) != cudaSuccess) return cuda_status(e);
    }
    if (!gradient) continue;

    if (p.grad_input != nullptr) {
      char* out = static_cast<char*>(p.grad_input) + first * p.grad_input_row_stride * e_size;
      st = g.grad_input.run(handle, p.linear_weight, chunk, out, 0.0f, gemm_workspace, stream);
      if (failed(st)) return st;
    }
    // In the input's dtype, grad_linear_weight and _bias are rounded to it once a chunk (each
    // chunk's beta = 1 reads the previous rounding back): no float32 copy of (V, H) fits the
    // workspace's budget, and float32 gradients (the default) round once a chunk in float32.
    const bool add = first > 0 || p.accumulate_grad_linear;
    if (p.grad_linear_weight != nullptr) {
      st = g.grad_weight.run(handle, x, chunk, p.grad_linear_weight, add ? 1.0f : 0.0f,
                             gemm_workspace, stream);
      if (failed(st)) return st;
    }
    if (p.grad_linear_bias != nullptr) {
      e = bias_gradient(p, chunk, rows, add, stream);
      if (e != cudaSuccess) return cuda_status(e);
    }
  }

  if (reduced_loss || reduced_z) {
    finish_kernel<<<1, 1, 0, stream>>>(s, mean, p.empty_value, reduced_loss ? p.loss : nullptr,
                                       reduced_z ? p.z_loss_out : nullptr);
    if ((e = cudaGetLastError()) != cudaSuccess) return cuda_status(e);
  }
  // No rows: the gradients of W and b are 0, which overwriting writes (all-zero bits are 0.0 in
  // every float dtype).
  if (p.batch == 0 && gradient && !p.accumulate_grad_linear) {
    const size_t out_size = element_size(p.grad_linear_dtype);
    if (p.grad_linear_weight != nullptr) {
      e = cudaMemsetAsync(p.grad_linear_weight, 0,
                          static_cast<size_t>(p.num_classes * p.hidden) * out_size, stream);
      if (e != cudaSuccess) return cuda_status(e);
    }
    if (p.grad_linear_bias != nullptr) {
      e = cudaMemsetAsync(p.grad_linear_bias, 0, static_cast<size_t>(p.num_classes) * out_size,
                          stream);
      if (e != cudaSuccess) return cuda_status(e);
    }
  }
  return kOk;
}

}  // namespace fusedloss::kernels
