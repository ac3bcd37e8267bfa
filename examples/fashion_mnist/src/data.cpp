#include "data.hpp"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>

namespace fm {
namespace {

const char* const kHint =
    "Fashion-MNIST comes from Debian's dataset-fashion-mnist package "
    "(apt-get install dataset-fashion-mnist, files under /usr/share/datasets/fashion-mnist/); "
    "or pass --data DIR with the four *-ubyte.gz files";

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw data_error(path + ": " + what + ". " + kHint);
}

bool exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// The whole (decompressed) file. zlib reads an uncompressed file as it is.
std::vector<uint8_t> read_file(const std::string& dir, const std::string& name, std::string* path) {
  *path = dir + "/" + name + ".gz";
  if (!exists(*path) && exists(dir + "/" + name)) *path = dir + "/" + name;
  gzFile f = gzopen(path->c_str(), "rb");
  if (f == nullptr) fail(*path, std::string("cannot open (") + std::strerror(errno) + ")");
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  for (;;) {
    const int got = gzread(f, chunk, sizeof chunk);
    if (got < 0) {
      int code = 0;
      const std::string message = gzerror(f, &code);
      gzclose(f);
      fail(*path, "malformed: zlib says \"" + message + "\"");
    }
    if (got == 0) break;
    bytes.insert(bytes.end(), chunk, chunk + got);
  }
  int code = Z_OK;
  const std::string message = gzerror(f, &code);
  gzclose(f);
  if (code != Z_OK) fail(*path, "malformed: zlib says \"" + message + "\"");
  return bytes;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 | uint32_t(b[at + 2]) << 8 | b[at + 3];
}

// IDX: a big-endian magic 0x000008NN (NN = the number of dimensions, 08 = unsigned bytes), the
// dimensions, then the data.
std::vector<uint8_t> read_idx(const std::string& dir, const std::string& name,
                              const std::vector<uint32_t>& dims, std::string* path) {
  std::vector<uint8_t> b = read_file(dir, name, path);
  const size_t header = 4 + 4 * dims.size();
  const uint32_t magic = 0x0800u | uint32_t(dims.size());
  if (b.size() < header || be32(b, 0) != magic) {
    char expected[16];
    std::snprintf(expected, sizeof expected, "0x%08x", magic);
    fail(*path, std::string("malformed: not an IDX file of unsigned bytes (magic ") + expected +
                    " expected)");
  }
  size_t count = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (be32(b, 4 + 4 * i) != dims[i])
      fail(*path, "malformed: dimension " + std::to_string(i) + " is " +
                      std::to_string(be32(b, 4 + 4 * i)) + ", expected " + std::to_string(dims[i]));
    count *= dims[i];
  }
  if (b.size() != header + count)
    fail(*path, "malformed: " + std::to_string(b.size() - header) + " data bytes, expected " +
                    std::to_string(count) + " (truncated?)");
  b.erase(b.begin(), b.begin() + header);
  return b;
}

Split read_split(const std::string& dir, const std::string& prefix, uint32_t count) {
  std::string image_path, label_path;
  const auto pixels = read_idx(dir, prefix + "-images-idx3-ubyte", {count, 28, 28}, &image_path);
  const auto labels = read_idx(dir, prefix + "-labels-idx1-ubyte", {count}, &label_path);
  Split s;
  s.count = int(count);
  s.images.assign(pixels.begin(), pixels.end());
  s.labels.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (labels[i] >= kClasses)
      fail(label_path, "malformed: label " + std::to_string(labels[i]) + " at " +
                           std::to_string(i) + " is not a class in [0, 10)");
    s.labels[i] = labels[i];
  }
  return s;
}

}  // namespace

Dataset load_fashion_mnist(const std::string& dir) {
  Dataset d;
  d.train = read_split(dir, "train", 60000);
  d.test = read_split(dir, "t10k", 10000);
  double sum = 0, sq = 0;
  for (float v : d.train.images) {
    sum += v / 255.0;
    sq += (v / 255.0) * (v / 255.0);
  }
  const double n = double(d.train.images.size());
  d.mean = float(sum / n);
  d.stddev = float(std::sqrt(sq / n - (sum / n) * (sum / n)));
  for (Split* s : {&d.train, &d.test})
    for (float& v : s->images) v = (v / 255.0f - d.mean) / d.stddev;
  return d;
}

Split subset(const Split& split, int count, uint64_t seed) {
  if (count <= 0 || count >= split.count) return split;
  std::vector<int> order(split.count);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  Split s;
  s.count = count;
  s.images.resize(size_t(count) * kPixels);
  s.labels.resize(count);
  for (int i = 0; i < count; ++i) {
    std::copy_n(split.images.begin() + size_t(order[i]) * kPixels, kPixels,
                s.images.begin() + size_t(i) * kPixels);
    s.labels[i] = split.labels[order[i]];
  }
  return s;
}

}  // namespace fm
