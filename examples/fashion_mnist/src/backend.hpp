// The few operations training needs, on one device's memory: the CPU (a CBLAS) or CUDA (cuBLAS and
// the small kernels in cuda_backend.cu). Matrices are row-major float32. The loss itself is not
// here: train.cpp calls fusedloss with the backend's device and stream.
#pragma once

#include <fusedloss/fusedloss.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace fm {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual fusedloss_device loss_device() const = 0;
  virtual void* stream() const = 0;  // what fusedloss gets as its stream (null on the CPU)

  virtual void* alloc_bytes(size_t bytes) = 0;  // zero-filled
  virtual void free_bytes(void* p) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;  // waits for the device

  // c = alpha * op(a) * op(b) + beta * c with op(a) m x k and op(b) k x n.
  virtual void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a,
                    int lda, const float* b, int ldb, float beta, float* c, int ldc) = 0;
  // db = alpha * the column sums of y (rows x cols).
  virtual void column_sum(const float* y, int rows, int cols, float alpha, float* db) = 0;
  virtual void add_bias(float* y, const float* bias, int rows, int cols) = 0;
  virtual void relu(float* y, size_t n) = 0;
  virtual void relu_backward(float* dy, const float* y, size_t n) = 0;  // dy *= (y > 0)
  virtual void sigmoid(const float* x, float* s, size_t n) = 0;
  virtual void sigmoid_backward(float* g, const float* s, size_t n) = 0;  // g *= s (1 - s)
  virtual void one_hot(const int32_t* labels, float* out, int rows, int classes) = 0;
  // dst row i = src row index[i], and its label.
  virtual void gather_rows(const float* src, const int32_t* src_labels, const int32_t* index,
                           int rows, int cols, float* dst, int32_t* dst_labels) = 0;
  // stats[0] += *loss; stats[1] += sum over rows of the row's L2 norm of grad;
  // stats[2] += the rows whose logits' argmax is the label.
  virtual void accumulate_stats(const float* loss, const float* logits, const float* grad,
                                const int32_t* labels, int rows, int cols, double* stats) = 0;
  // velocity = momentum * velocity + g; p -= lr * velocity.
  virtual void sgd_step(float* p, float* velocity, const float* g, size_t n, float lr,
                        float momentum) = 0;
  // Adam with the bias corrections 1 - beta^t passed in.
  virtual void adam_step(float* p, float* m, float* v, const float* g, size_t n, float lr,
                         float beta1, float beta2, float eps, float correction1,
                         float correction2) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();
#ifdef FM_WITH_CUDA
// Whether a CUDA device is usable (and fusedloss has its CUDA path); `why` says why not.
bool cuda_usable(std::string* why);
std::unique_ptr<Backend> make_cuda_backend();
#endif

// Memory of one backend, freed with it.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& backend, size_t n)
      : backend_(&backend), n_(n), p_(static_cast<T*>(backend.alloc_bytes(n * sizeof(T)))) {}
  ~Buffer() {
    if (p_ != nullptr) backend_->free_bytes(p_);
  }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(backend_, o.backend_);
    std::swap(n_, o.n_);
    std::swap(p_, o.p_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const T* src, size_t n, size_t offset = 0) {
    backend_->upload(p_ + offset, src, n * sizeof(T));
  }
  void upload(const std::vector<T>& v) { upload(v.data(), v.size()); }
  std::vector<T> download(size_t n, size_t offset = 0) const {
    std::vector<T> v(n);
    backend_->download(v.data(), p_ + offset, n * sizeof(T));
    return v;
  }

 private:
  Backend* backend_ = nullptr;
  size_t n_ = 0;
  T* p_ = nullptr;
};

}  // namespace fm
