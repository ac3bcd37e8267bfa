// The CPU backend: CBLAS (OpenBLAS from Debian's libopenblas-dev) for the matrix products, plain
// loops for the rest. fusedloss runs its double-precision CPU path on these host pointers.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backend.hpp"

namespace fm {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu (CBLAS)"; }
  fusedloss_device loss_device() const override { return FUSEDLOSS_DEVICE_CPU; }
  void* stream() const override { return nullptr; }

  void* alloc_bytes(size_t bytes) override {
    void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    return p;
  }
  void free_bytes(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }

  void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
            const float* b, int ldb, float beta, float* c, int ldc) override {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  void column_sum(const float* y, int rows, int cols, float alpha, float* db) override {
    std::fill(db, db + cols, 0.0f);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) db[c] += y[size_t(r) * cols + c];
    for (int c = 0; c < cols; ++c) db[c] *= alpha;
  }
  void add_bias(float* y, const float* bias, int rows, int cols) override {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) y[size_t(r) * cols + c] += bias[c];
  }
  void relu(float* y, size_t n) override {
    for (size_t i = 0; i < n; ++i) y[i] = y[i] > 0 ? y[i] : 0.0f;
  }
  void relu_backward(float* dy, const float* y, size_t n) override {
    for (size_t i = 0; i < n; ++i)
      if (!(y[i] > 0)) dy[i] = 0.0f;
  }
  void sigmoid(const float* x, float* s, size_t n) override {
    for (size_t i = 0; i < n; ++i) s[i] = 1.0f / (1.0f + std::exp(-x[i]));
  }
  void sigmoid_backward(float* g, const float* s, size_t n) override {
    for (size_t i = 0; i < n; ++i) g[i] *= s[i] * (1.0f - s[i]);
  }
  void one_hot(const int32_t* labels, float* out, int rows, int classes) override {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < classes; ++c) out[size_t(r) * classes + c] = labels[r] == c ? 1.0f : 0.0f;
  }
  void gather_rows(const float* src, const int32_t* src_labels, const int32_t* index, int rows,
                   int cols, float* dst, int32_t* dst_labels) override {
    for (int r = 0; r < rows; ++r) {
      std::memcpy(dst + size_t(r) * cols, src + size_t(index[r]) * cols, cols * sizeof(float));
      dst_labels[r] = src_labels[index[r]];
    }
  }
  void accumulate_stats(const float* loss, const float* logits, const float* grad,
                        const int32_t* labels, int rows, int cols, double* stats) override {
    double norms = 0, correct = 0;
    for (int r = 0; r < rows; ++r) {
      const float* g = grad + size_t(r) * cols;
      const float* x = logits + size_t(r) * cols;
      double sq = 0;
      int best = 0;
      for (int c = 0; c < cols; ++c) {
        sq += double(g[c]) * g[c];
        if (x[c] > x[best]) best = c;
      }
      norms += std::sqrt(sq);
      correct += best == labels[r];
    }
    stats[0] += *loss;
    stats[1] += norms;
    stats[2] += correct;
  }
  void sgd_step(float* p, float* velocity, const float* g, size_t n, float lr,
                float momentum) override {
    for (size_t i = 0; i < n; ++i) {
      velocity[i] = momentum * velocity[i] + g[i];
      p[i] -= lr * velocity[i];
    }
  }
  void adam_step(float* p, float* m, float* v, const float* g, size_t n, float lr, float beta1,
                 float beta2, float eps, float correction1, float correction2) override {
    for (size_t i = 0; i < n; ++i) {
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      p[i] -= lr * (m[i] / correction1) / (std::sqrt(v[i] / correction2) + eps);
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace fm
