// Elementwise activations on contiguous runs for the fused kernels (group_norm_nhwc, geglu): float goes
// through Eigen's SIMD packet math (exp, erf) one packet at a time, the tail through a padded packet, so
// every element takes the same vector code wherever it sits in memory (Eigen's own array assignment peels
// unaligned heads into scalar code, which made results depend on heap addresses); double uses libm.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <unsupported/Eigen/SpecialFunctions>

// Eigen's packet types (__m512 and the like) carry vector attributes that GCC drops, with a warning, wherever
// they are template arguments (unpacket_traits<Packet16f>, PacketBlock<Packet16f, 16>); the kernels that
// include this header use them only as such types.
#pragma GCC diagnostic ignored "-Wignored-attributes"

namespace lcd::vector_math {

namespace ei = Eigen::internal;
using FloatPacket = ei::packet_traits<float>::type;
constexpr int kLanes = ei::unpacket_traits<FloatPacket>::size;

// y[i] = f(x[i]) with f a function of a float packet (or of a double, for double).
template <typename F>
void map(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) ei::pstoreu(y + i, f(ei::ploadu<FloatPacket>(x + i)));
  if (i == n) return;
  alignas(64) float in[kLanes] = {}, out[kLanes];
  std::copy(x + i, x + n, in);
  ei::pstore(out, f(ei::pload<FloatPacket>(in)));
  std::copy(out, out + (n - i), y + i);
}

// y[i] = f(a[i], b[i]).
template <typename F>
void map2(const float* a, const float* b, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) ei::pstoreu(y + i, f(ei::ploadu<FloatPacket>(a + i), ei::ploadu<FloatPacket>(b + i)));
  if (i == n) return;
  alignas(64) float pa[kLanes] = {}, pb[kLanes] = {}, out[kLanes];
  std::copy(a + i, a + n, pa);
  std::copy(b + i, b + n, pb);
  ei::pstore(out, f(ei::pload<FloatPacket>(pa), ei::pload<FloatPacket>(pb)));
  std::copy(out, out + (n - i), y + i);
}

// σ(v) = 1 / (1 + e^{−v}) and friends, for packets and doubles alike.
inline FloatPacket sigmoid(const FloatPacket& v) {
  const FloatPacket one = ei::pset1<FloatPacket>(1.0f);
  return ei::pdiv(one, ei::padd(one, ei::pexp(ei::pnegate(v))));
}
inline double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

inline FloatPacket silu(const FloatPacket& v) { return ei::pmul(v, sigmoid(v)); }
inline double silu(double v) { return v * sigmoid(v); }

// d silu / dv = σ(v)·(1 + v·(1 − σ(v)))
inline FloatPacket silu_grad(const FloatPacket& v) {
  const FloatPacket one = ei::pset1<FloatPacket>(1.0f), s = sigmoid(v);
  return ei::pmul(s, ei::padd(one, ei::pmul(v, ei::psub(one, s))));
}
inline double silu_grad(double v) {
  const double s = sigmoid(v);
  return s * (1.0 + v * (1.0 - s));
}

// Exact GELU, ½v(1 + erf(v/√2)), and its derivative ½(1 + erf(v/√2)) + v·φ(v).
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

inline FloatPacket gelu(const FloatPacket& v) {
  const FloatPacket half = ei::pset1<FloatPacket>(0.5f), one = ei::pset1<FloatPacket>(1.0f);
  return ei::pmul(ei::pmul(half, v), ei::padd(one, ei::perf(ei::pmul(v, ei::pset1<FloatPacket>(float(kInvSqrt2))))));
}
inline double gelu(double v) { return 0.5 * v * (1.0 + std::erf(v * kInvSqrt2)); }

inline FloatPacket gelu_grad(const FloatPacket& v) {
  const FloatPacket half = ei::pset1<FloatPacket>(0.5f), one = ei::pset1<FloatPacket>(1.0f);
  const FloatPacket cdf = ei::pmul(half, ei::padd(one, ei::perf(ei::pmul(v, ei::pset1<FloatPacket>(float(kInvSqrt2))))));
  const FloatPacket pdf = ei::pmul(ei::pset1<FloatPacket>(float(kInvSqrt2Pi)),
                                   ei::pexp(ei::pmul(ei::pset1<FloatPacket>(-0.5f), ei::pmul(v, v))));
  return ei::padd(cdf, ei::pmul(v, pdf));
}
inline double gelu_grad(double v) { return 0.5 * (1.0 + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5 * v * v); }

// The same maps for double runs (scalar libm).
template <typename F>
void map(const double* x, double* y, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}
template <typename F>
void map2(const double* a, const double* b, double* y, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
}

}  // namespace lcd::vector_math
