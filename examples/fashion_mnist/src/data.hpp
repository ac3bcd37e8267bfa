// Fashion-MNIST from the IDX files of Debian's dataset-fashion-mnist package (gzipped, read with
// zlib), standardised with the training set's mean and standard deviation.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fm {

constexpr int kPixels = 28 * 28;
constexpr int kClasses = 10;
constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";

// A missing or malformed dataset file; the message names the file and the Debian package.
struct data_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Split {
  int count = 0;
  std::vector<float> images;    // count x kPixels, standardised
  std::vector<int32_t> labels;  // count, in [0, kClasses)
};

struct Dataset {
  Split train, test;
  float mean = 0, stddev = 1;  // of the training pixels scaled to [0, 1]
};

// Reads `dir`/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (or the same names without .gz).
Dataset load_fashion_mnist(const std::string& dir);

// The first `count` images of a seeded permutation of `split` (all of them when count <= 0 or
// count >= the split's size).
Split subset(const Split& split, int count, uint64_t seed);

}  // namespace fm
