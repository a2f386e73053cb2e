// ReorderedOperand: float32 weights put into a bf16 blocked layout through a bf16 copy of the same layout
// (rounded first, for speed) must give the bytes that oneDNN's own reorder gives from the float32 values,
// and a second layout made from the first must too. Layouts as the layers hand them over: OIHW and OHWI
// convolution weights, row-major and transposed matrices, and a strided matrix (rows with gaps), which takes
// oneDNN's reorder directly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/cpu/dnnl_support.h"
#include "autograd/cpu/precision.h"
#include "autograd/random.h"

namespace lcd {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using cpu::dnnl_support::engine;
using cpu::dnnl_support::ReorderedOperand;

// oneDNN's reorder of `src` into `d`, straight from float32: the reference.
std::vector<char> reference(const dnnl::memory& src, const dnnl::memory::desc& d) {
  std::vector<char> bytes(d.get_size());
  dnnl::memory dst(d, engine(), bytes.data());
  dnnl::stream s(engine());
  dnnl::reorder(src, dst).execute(s, const_cast<dnnl::memory&>(src), dst);
  s.wait();
  return bytes;
}

void expect_bytes(const dnnl::memory& got, const std::vector<char>& want, const char* what) {
  ASSERT_EQ(got.get_desc().get_size(), want.size()) << what;
  EXPECT_EQ(std::memcmp(got.get_data_handle(), want.data(), want.size()), 0) << what;
}

// Values of every magnitude a weight holds, with both signs, and ties of bf16 rounding (a float whose low 16
// bits are 0x8000 rounds to even).
std::vector<float> weight_values(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double x = rng.normal() * std::pow(10.0, static_cast<double>(i % 7) - 4.0);
    v[i] = static_cast<float>(x);
    if (i % 11 == 0) {  // an exact tie
      uint32_t u;
      std::memcpy(&u, &v[i], 4);
      u = (u & 0xffff0000u) | 0x8000u;
      std::memcpy(&v[i], &u, 4);
    }
  }
  return v;
}

TEST(ReorderedOperand, Bf16LayoutsMatchOneDnnsReorderFromFloat32) {
  if (!bf16_supported()) GTEST_SKIP() << "no native bf16 here";
  struct Case {
    const char* name;
    dnnl::memory::desc src, first, second;
  };
  const dnnl::memory::dims conv{48, 40, 3, 3}, mat{72, 136};
  const std::vector<Case> cases = {
      {"conv OIHW", {conv, dt::f32, tag::oihw}, {conv, dt::bf16, tag::AcdB64a2b}, {conv, dt::bf16, tag::ABcd8a16b2a}},
      {"conv OHWI", {conv, dt::f32, tag::ohwi}, {conv, dt::bf16, tag::AcdB32a2b}, {conv, dt::bf16, tag::ABcd16b16a2b}},
      {"matrix", {mat, dt::f32, tag::ab}, {mat, dt::bf16, tag::BA16a64b2a}, {mat, dt::bf16, tag::BA16a32b2a}},
      {"matrix transposed", {mat, dt::f32, tag::ba}, {mat, dt::bf16, tag::BA16a64b2a}, {mat, dt::bf16, tag::ab}},
      {"matrix with row gaps", {mat, dt::f32, dnnl::memory::dims{150, 1}}, {mat, dt::bf16, tag::BA16a64b2a},
       {mat, dt::bf16, tag::ba}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<float> values = weight_values(static_cast<int64_t>(c.src.get_size() / sizeof(float)), 7);
    const dnnl::memory src(c.src, engine(), const_cast<float*>(values.data()));
    ReorderedOperand op(src, c.first);
    expect_bytes(op.in_layout(c.first), reference(src, c.first), "first layout");
    expect_bytes(op.in_layout(c.second), reference(src, c.second), "second layout, made from the first");
  }
}

}  // namespace
}  // namespace lcd
