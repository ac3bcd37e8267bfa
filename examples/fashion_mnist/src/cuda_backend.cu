// The CUDA backend: cuBLAS for the matrix products and column sums, and small kernels for the bias,
// the activations, the batch gather, the optimiser steps and the per-batch statistics. Everything
// runs on one stream, which fusedloss's calls get too, so nothing waits for the device except
// download(). The statistics kernel is a single block that adds to its double accumulators in a
// fixed order: the logged numbers are the same from run to run.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <stdexcept>
#include <string>

#include "backend.hpp"

#define FM_CUDA_TRY(call)                                                                      \
  do {                                                                                         \
    const cudaError_t fm_status = (call);                                                      \
    if (fm_status != cudaSuccess) {                                                            \
      (void)cudaGetLastError();                                                                \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + \
                               cudaGetErrorName(fm_status) + ": " +                            \
                               cudaGetErrorString(fm_status));                                 \
    }                                                                                          \
  } while (0)

#define FM_CUBLAS_TRY(call)                                                                    \
  do {                                                                                         \
    const cublasStatus_t fm_status = (call);                                                   \
    if (fm_status != CUBLAS_STATUS_SUCCESS)                                                    \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + \
                               cublasGetStatusName(fm_status));                                \
  } while (0)

namespace fm {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 4096 ? (b > 0 ? b : 1) : 4096);  // grid-stride beyond this
}

#define FM_GRID_STRIDE(i, n)                                              \
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < (n); \
       i += size_t(gridDim.x) * blockDim.x)

__global__ void add_bias_kernel(float* y, const float* bias, int cols, size_t n) {
  FM_GRID_STRIDE(i, n) y[i] += bias[i % cols];
}
__global__ void relu_kernel(float* y, size_t n) {
  FM_GRID_STRIDE(i, n) y[i] = y[i] > 0 ? y[i] : 0.0f;
}
__global__ void relu_backward_kernel(float* dy, const float* y, size_t n) {
  FM_GRID_STRIDE(i, n) if (!(y[i] > 0)) dy[i] = 0.0f;
}
__global__ void sigmoid_kernel(const float* x, float* s, size_t n) {
  FM_GRID_STRIDE(i, n) s[i] = 1.0f / (1.0f + expf(-x[i]));
}
__global__ void sigmoid_backward_kernel(float* g, const float* s, size_t n) {
  FM_GRID_STRIDE(i, n) g[i] *= s[i] * (1.0f - s[i]);
}
__global__ void one_hot_kernel(const int32_t* labels, float* out, int classes, size_t n) {
  FM_GRID_STRIDE(i, n) out[i] = labels[i / classes] == int(i % classes) ? 1.0f : 0.0f;
}
__global__ void gather_kernel(const float* src, const int32_t* src_labels, const int32_t* index,
                              int cols, size_t n, float* dst, int32_t* dst_labels) {
  FM_GRID_STRIDE(i, n) {
    const size_t r = i / cols, c = i % cols;
    dst[i] = src[size_t(index[r]) * cols + c];
    if (c == 0) dst_labels[r] = src_labels[index[r]];
  }
}
__global__ void sgd_kernel(float* p, float* velocity, const float* g, size_t n, float lr,
                           float momentum) {
  FM_GRID_STRIDE(i, n) {
    velocity[i] = momentum * velocity[i] + g[i];
    p[i] -= lr * velocity[i];
  }
}
__global__ void adam_kernel(float* p, float* m, float* v, const float* g, size_t n, float lr,
                            float beta1, float beta2, float eps, float correction1,
                            float correction2) {
  FM_GRID_STRIDE(i, n) {
    m[i] = beta1 * m[i] + (1 - beta1) * g[i];
    v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
    p[i] -= lr * (m[i] / correction1) / (sqrtf(v[i] / correction2) + eps);
  }
}
__global__ void fill_kernel(float* x, float value, size_t n) { FM_GRID_STRIDE(i, n) x[i] = value; }

// One block: each thread takes rows r = tid, tid + blockDim, ...; the block reduction then adds the
// batch's sums to the accumulators (one writer, a fixed order: deterministic).
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const float* loss, const float* logits, const float* grad, const int32_t* labels,
                 int rows, int cols, double* stats) {
  using reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename reduce::TempStorage storage;
  double norms = 0, correct = 0;
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    const float* g = grad + size_t(r) * cols;
    const float* x = logits + size_t(r) * cols;
    double sq = 0;
    int best = 0;
    for (int c = 0; c < cols; ++c) {
      sq += double(g[c]) * g[c];
      if (x[c] > x[best]) best = c;
    }
    norms += sqrt(sq);
    correct += best == labels[r] ? 1.0 : 0.0;
  }
  const double norm_sum = reduce(storage).Sum(norms);
  __syncthreads();
  const double correct_sum = reduce(storage).Sum(correct);
  if (threadIdx.x == 0) {
    stats[0] += *loss;
    stats[1] += norm_sum;
    stats[2] += correct_sum;
  }
}

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    FM_CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    FM_CUBLAS_TRY(cublasCreate(&blas_));
    FM_CUBLAS_TRY(cublasSetStream(blas_, stream_));
    cudaDeviceProp prop{};
    int device = 0;
    FM_CUDA_TRY(cudaGetDevice(&device));
    FM_CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    name_ = std::string("cuda (") + prop.name + ", cuBLAS)";
  }
  ~CudaBackend() override {
    if (ones_ != nullptr) cudaFree(ones_);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return name_; }
  fusedloss_device loss_device() const override { return FUSEDLOSS_DEVICE_CUDA; }
  void* stream() const override { return stream_; }

  void* alloc_bytes(size_t bytes) override {
    void* p = nullptr;
    FM_CUDA_TRY(cudaMalloc(&p, bytes > 0 ? bytes : 1));
    FM_CUDA_TRY(cudaMemsetAsync(p, 0, bytes, stream_));
    return p;
  }
  void free_bytes(void* p) override {
    cudaStreamSynchronize(stream_);
    cudaFree(p);
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    // From pageable memory: returns once `src` has been staged, so the caller may reuse it.
    FM_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    FM_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    FM_CUDA_TRY(cudaStreamSynchronize(stream_));
  }

  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
            const float* b, int ldb, float beta, float* c, int ldc) override {
    FM_CUBLAS_TRY(cublasSgemm(blas_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                              trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a, lda,
                              &beta, c, ldc));
  }
  // Row-major y (rows x cols) is column-major (cols x rows): its column sums are y * ones.
  void column_sum(const float* y, int rows, int cols, float alpha, float* db) override {
    if (ones_count_ < size_t(rows)) {
      if (ones_ != nullptr) free_bytes(ones_);
      ones_ = static_cast<float*>(alloc_bytes(rows * sizeof(float)));
      ones_count_ = rows;
      fill_kernel<<<blocks_for(rows), kThreads, 0, stream_>>>(ones_, 1.0f, rows);
      FM_CUDA_TRY(cudaGetLastError());
    }
    const float beta = 0.0f;
    FM_CUBLAS_TRY(
        cublasSgemv(blas_, CUBLAS_OP_N, cols, rows, &alpha, y, cols, ones_, 1, &beta, db, 1));
  }
  void add_bias(float* y, const float* bias, int rows, int cols) override {
    const size_t n = size_t(rows) * cols;
    add_bias_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(y, bias, cols, n);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void relu(float* y, size_t n) override {
    relu_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(y, n);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void relu_backward(float* dy, const float* y, size_t n) override {
    relu_backward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(dy, y, n);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void sigmoid(const float* x, float* s, size_t n) override {
    sigmoid_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(x, s, n);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void sigmoid_backward(float* g, const float* s, size_t n) override {
    sigmoid_backward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(g, s, n);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void one_hot(const int32_t* labels, float* out, int rows, int classes) override {
    const size_t n = size_t(rows) * classes;
    one_hot_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(labels, out, classes, n);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void gather_rows(const float* src, const int32_t* src_labels, const int32_t* index, int rows,
                   int cols, float* dst, int32_t* dst_labels) override {
    const size_t n = size_t(rows) * cols;
    gather_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(src, src_labels, index, cols, n, dst,
                                                           dst_labels);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void accumulate_stats(const float* loss, const float* logits, const float* grad,
                        const int32_t* labels, int rows, int cols, double* stats) override {
    stats_kernel<<<1, kThreads, 0, stream_>>>(loss, logits, grad, labels, rows, cols, stats);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void sgd_step(float* p, float* velocity, const float* g, size_t n, float lr,
                float momentum) override {
    sgd_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(p, velocity, g, n, lr, momentum);
    FM_CUDA_TRY(cudaGetLastError());
  }
  void adam_step(float* p, float* m, float* v, const float* g, size_t n, float lr, float beta1,
                 float beta2, float eps, float correction1, float correction2) override {
    adam_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(p, m, v, g, n, lr, beta1, beta2, eps,
                                                         correction1, correction2);
    FM_CUDA_TRY(cudaGetLastError());
  }

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::string name_;
  float* ones_ = nullptr;
  size_t ones_count_ = 0;
};

}  // namespace

bool cuda_usable(std::string* why) {
  if (!fusedloss_built_with_cuda()) {
    *why = "the installed fusedloss was built without CUDA";
    return false;
  }
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    *why = std::string("no usable CUDA device (") + cudaGetErrorString(status) + ")";
    return false;
  }
  if (count == 0) {
    *why = "no CUDA device";
    return false;
  }
  return true;
}

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

}  // namespace fm
