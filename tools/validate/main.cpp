// `fusedloss validate`: runs every loss and option over a sweep of shapes and prints one table row
// per check.
//
// - fd: backward's gradient (float64 logits, a random non-unit upstream gradient) against central
//   finite differences of forward.
// - fused: forward_backward's loss and gradient (with grad_scale and grad_scale_ptr) against
//   forward's loss and backward's gradient.
// - product: fused linear + cross-entropy's loss against cross-entropy of the logits x W^T + b
//   computed here. Its fd and fused rows differentiate the hidden states, the weight and the bias
//   together.
// - shards: vocabulary-parallel cross-entropy's shard calls over 1 to 4 ranks (the all-reduces
//   done here) against the whole rows' cross-entropy: loss, LSE and the concatenated gradient, in
//   float64 and float32.
// - golden: every case of the golden files, which come from an oracle that shares no code with the
//   library (tests/golden/make_golden.py).
// - gpu: the CUDA path in float32/float16/bfloat16 against the CPU reference on the same stored
//   inputs (compiled in with FUSEDLOSS_VALIDATE_CUDA, run when a device is present); linear +
//   cross-entropy (with the default workspace and with one that splits the rows into chunks) and
//   the shard path in float32 and bfloat16.
//
// --perturb and --tolerance-scale make a correct library fail on purpose: the test suite uses them
// to prove that the tool notices a wrong result.
//
// This file is the command line, and runs the checks in their order: call_checks.cpp holds fd,
// fused, product, gpu and golden, cross_entropy_checks.cpp shards and the gpu checks of the shard
// path and of linear + cross-entropy; sweep.cpp lists the problems they run on.
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "call_checks.hpp"
#include "cross_entropy_checks.hpp"
#include "memory.hpp"
#include "sweep.hpp"
#include "table.hpp"

namespace {

using namespace fusedloss::validate;
namespace checks = fusedloss::checks;

void usage(std::FILE* out) {
  std::fprintf(
      out,
      "usage: fusedloss validate [--device auto|cpu|cuda] [--golden DIR]\n"
      "                          [--tolerance-scale X] [--perturb EPS] [--seed N]\n"
      "\n"
      "Checks every loss and option over a sweep of shapes, one table row per check:\n"
      "  fd      backward's gradient against finite differences of forward (CPU, float64)\n"
      "  fused   forward_backward against forward and backward (CPU, float64)\n"
      "  product linear + cross-entropy's loss against cross-entropy of the product (CPU)\n"
      "  shards  vocabulary-parallel shard calls against the whole rows (CPU, float64/float32)\n"
      "  golden  every case of DIR/*.golden (default %s)\n"
      "  gpu     the CUDA path in float32/float16/bfloat16 against the CPU reference\n"
      "\n"
      "  --device           auto: GPU checks when a CUDA device is usable (default);\n"
      "                     cpu: none; cuda: fail when no device is usable\n"
      "  --tolerance-scale  multiply every fd, fused and gpu tolerance by X > 0 (default 1)\n"
      "  --perturb          multiply every loss and gradient under test by 1 + EPS, to show\n"
      "                     that the checks catch a wrong result (default 0)\n"
      "  --seed             seed of the random inputs (default: random; printed)\n"
      "\n"
      "Exit status: 0 when every check passed, 1 when one failed, 2 on a usage error.\n",
      FUSEDLOSS_GOLDEN_DIR);
}

bool parse_double(const char* text, double& out) {
  char* end = nullptr;
  out = std::strtod(text, &end);
  return end != text && *end == '\0' && std::isfinite(out);
}

bool parse_u64(const char* text, uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(text, &end, 10);
  return end != text && *end == '\0' && errno == 0 && text[0] != '-';
}

// Reads `validate`'s options into `s`. Returns -1 for --help, 2 on a usage error, else 0.
int parse(int argc, char** argv, settings& s) {
  bool seeded = false;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") return -1;
    const bool known = arg == "--device" || arg == "--golden" || arg == "--tolerance-scale" ||
                       arg == "--perturb" || arg == "--seed";
    if (!known || i + 1 >= argc) {
      std::fprintf(stderr, "fusedloss validate: %s %s\n",
                   known ? "missing value for" : "unknown option", arg.c_str());
      return 2;
    }
    const char* value = argv[++i];
    bool ok = true;
    if (arg == "--device") {
      s.device = value;
      ok = s.device == "auto" || s.device == "cpu" || s.device == "cuda";
    } else if (arg == "--golden") {
      s.golden_dir = value;
    } else if (arg == "--tolerance-scale") {
      ok = parse_double(value, s.tolerance_scale) && s.tolerance_scale > 0;
    } else if (arg == "--perturb") {
      ok = parse_double(value, s.perturb) && s.perturb > -1;
    } else {
      ok = seeded = parse_u64(value, s.seed);
    }
    if (!ok) {
      std::fprintf(stderr, "fusedloss validate: bad value for %s: %s\n", arg.c_str(), value);
      return 2;
    }
  }
  if (!seeded) {
    std::random_device device;
    s.seed = (uint64_t(device()) << 32) ^ device();
  }
  return 0;
}

int validate(const settings& s) {
  const auto start = std::chrono::steady_clock::now();
  std::printf("fusedloss validate: seed %" PRIu64 ", tolerance scale %g, perturb %g, golden %s\n",
              s.seed, s.tolerance_scale, s.perturb, s.golden_dir.c_str());
  validator v(s);
  rng_t rng(s.seed);
  const std::vector<problem> problems = all_problems(rng);
  const std::vector<linear_problem> linear = linear_problems(rng);
  const std::vector<shard_problem> sharded = shard_problems(rng);
  v.header();
  for (const problem& pr : problems) {
    v.check({"fd", pr.loss, pr.options, pr.shape, "float64"}, [&] { return fd_check(v, pr, rng); });
    v.check({"fused", pr.loss, pr.options, pr.shape, "float64"},
            [&] { return fused_check(v, pr, rng); });
  }
  for (const linear_problem& lp : linear) {
    const problem& pr = lp.pr;
    v.check({"fd", pr.loss, pr.options, pr.shape, "float64"}, [&] { return fd_check(v, pr, rng); });
    v.check({"fused", pr.loss, pr.options, pr.shape, "float64"},
            [&] { return fused_check(v, pr, rng); });
    v.check({"product", pr.loss, pr.options, pr.shape, "float64"},
            [&] { return product_check(v, lp); });
  }
  for (const shard_problem& sp : sharded) {
    for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT64, FUSEDLOSS_FLOAT32}) {
      v.check({"shards", shard_sweep.loss, sp.options, sp.shape, fusedloss_dtype_string(dtype)},
              [&] { return shard_check(v, sp, dtype, rng); });
    }
  }
  golden_checks(v);

  std::string why_not = "--device cpu";
  const std::optional<checks::device_memory> gpu =
      s.device == "cpu" ? std::nullopt : gpu_memory(why_not);
  if (gpu) {
    for (const problem& pr : problems) {
      for (const fusedloss_dtype dtype :
           {FUSEDLOSS_FLOAT32, FUSEDLOSS_FLOAT16, FUSEDLOSS_BFLOAT16}) {
        v.check({"gpu", pr.loss, pr.options, pr.shape, fusedloss_dtype_string(dtype)},
                [&] { return gpu_check(v, *gpu, pr, dtype, rng); });
      }
    }
    for (const fusedloss_dtype dtype : {FUSEDLOSS_FLOAT32, FUSEDLOSS_BFLOAT16}) {
      for (const linear_problem& lp : linear) {
        const problem& pr = lp.pr;
        v.check({"gpu", pr.loss, pr.options, pr.shape, fusedloss_dtype_string(dtype)},
                [&] { return linear_gpu_check(v, *gpu, lp, dtype, rng); });
      }
      for (const shard_problem& sp : sharded) {
        v.check({"gpu", shard_sweep.loss, sp.options, sp.shape, fusedloss_dtype_string(dtype)},
                [&] { return shard_gpu_check(v, *gpu, sp, dtype, rng); });
      }
    }
  } else if (s.device == "cuda") {
    v.fail({"gpu", "-", "-", "-", "-"}, "--device cuda, but " + why_not);
  } else {
    std::printf("GPU checks skipped: %s\n", why_not.c_str());
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return v.finish(elapsed.count());
}

}  // namespace

int main(int argc, char** argv) {
  const bool validate_command = argc >= 2 && std::strcmp(argv[1], "validate") == 0;
  settings s;
  const int status = validate_command ? parse(argc, argv, s) : 2;
  if (status != 0) {
    const bool help =
        status < 0 ||
        (argc == 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0));
    usage(help ? stdout : stderr);
    return help ? 0 : 2;
  }
  return validate(s);
}
