// fusedloss_scale_in_place, through enum_arguments.c so that its enum arguments can be any int.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "buffers.hpp"
#include "case.hpp"
#include "checks.hpp"
#include "generator.hpp"

// enum_arguments.c: calls that take enum arguments, passed from here as the ints they may be.
extern "C" fusedloss_status fuzz_scale_in_place(void* data, int dtype, int64_t numel,
                                                const void* scale, int scale_dtype, int device,
                                                fusedloss_error* err);

namespace fuzz {
namespace {

// The same bits in every element, except that any NaN matches any NaN: the contract fixes no NaN's
// sign or payload, and the fuzzer's codec and the library each write their own.
bool same_values(const block& got, const block& want) {
  for (int64_t i = 0; i < want.count; ++i) {
    if (std::isnan(got.value(i)) && std::isnan(want.value(i))) continue;
    if (std::memcmp(got.at(i), want.at(i), want.width()) != 0) return false;
  }
  return true;
}

}  // namespace

// fusedloss_scale_in_place: each value times the scale, rounded once to the data's dtype, and
// bitwise the same at a scale of exactly 1.
void fuzz_scale(source& s, fuzz_case& f) {
  values v{s, f.moderate};
  int64_t numel = s.up_to(s.choose(4) == 0 ? kCap : 64);
  if (s.spoil()) numel = -1;
  const int dtype = dtype_choice(s, true), scale_dtype = dtype_choice(s, true);
  int device = FUSEDLOSS_DEVICE_CPU;
  if (s.spoil()) device = s.choose(2) == 0 ? FUSEDLOSS_DEVICE_CUDA : 5;
  f.what = "scale_in_place numel=" + std::to_string(numel);
  block data, scale;
  data.allocate(!s.spoil(), dtype, numel);
  scale.allocate(!s.spoil(), scale_dtype, 1);
  for (int64_t i = 0; i < data.count; ++i) data.set(i, v.logit());
  if (scale.given) scale.set(0, s.choose(4) == 0 ? 1.0 : v.upstream());
  f.rule(numel >= 0, "numel");
  f.rule(floating(dtype), "dtype");
  f.rule(floating(scale_dtype), "scale_dtype");
  f.rule(device == FUSEDLOSS_DEVICE_CPU || device == FUSEDLOSS_DEVICE_CUDA, "device");
  f.rule(!(device == FUSEDLOSS_DEVICE_CUDA &&
           (dtype == FUSEDLOSS_FLOAT64 || scale_dtype == FUSEDLOSS_FLOAT64)),
         "dtype");
  f.rule(!(numel > 0 && !data.given), "data");
  f.rule(scale.given, "scale");
  const bool runs = f.valid && device == FUSEDLOSS_DEVICE_CPU;

  const block original = data, scale_before = scale;
  block expected = data;
  if (runs && scale.value(0) != 1.0) {
    for (int64_t i = 0; i < expected.count; ++i) expected.set(i, data.value(i) * scale.value(0));
  }
  fusedloss_error err;
  const fusedloss_status status = fuzz_scale_in_place(
      data.data(), dtype, numel, scale.data(), scale_dtype, device, f.use_err ? &err : nullptr);
  check_error(f, status, err);
  fusedloss_status want = FUSEDLOSS_INVALID_ARGUMENT;
  if (f.valid) want = runs ? FUSEDLOSS_SUCCESS : FUSEDLOSS_NOT_IMPLEMENTED;
  f.require(status == want,
            "scale_in_place returned " + std::to_string(status) + ", not " + std::to_string(want));
  f.require(scale.bytes == scale_before.bytes, "scale_in_place changed the scale");
  if (runs && scale.value(0) != 1.0) {
    f.require(same_values(data, expected),
              "scale_in_place's values are not each value times the scale, rounded once");
  } else {
    f.require(data.bytes == original.bytes, runs ? "scale_in_place at a scale of 1 changed a bit"
                                                 : "a refused scale_in_place wrote");
  }
}

}  // namespace fuzz
