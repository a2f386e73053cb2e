// UNet forward throughput for fmnist-ldm-v1 (DESIGN.md §3) at batch 64: samples/s and GFLOP/s in no-grad mode
// and with a full backward pass (weight and input gradients), next to Eigen's raw GEMM rate on this machine.
// Usage: bench_unet [MODEL_DIR=models/fmnist-ldm-v1] [--threads N] [--batch B] [--reps R]
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/flop_counter.h"
#include "autograd/gemm.h"
#include "autograd/threads.h"
#include "infer/io/model_io.h"

using namespace lcd;
using Clock = std::chrono::steady_clock;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

static double eigen_gemm_gflops() {
  const int n = 1024;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  gemm(c, a, b, false);
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) {
    auto s = Clock::now();
    gemm(c, a, b, false);
    t.push_back(std::chrono::duration<double>(Clock::now() - s).count());
  }
  return 2.0 * n * n * n / median(t) * 1e-9;
}

int main(int argc, char** argv) {
  std::string dir = "models/fmnist-ldm-v1";
  int threads = 2, batch = 64, reps = 5;
  bool backward = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--batch" && i + 1 < argc) batch = std::atoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--forward-only") backward = false;
    else if (a == "--help") { std::puts("bench_unet [MODEL_DIR] [--threads N] [--batch B] [--reps R] [--forward-only]"); return 0; }
    else dir = a;
  }
  set_num_threads(threads);
  try {
    auto unet = load_unet(dir + "/unet");
    Tensor table = load_cond_embeddings(dir);
    std::mt19937_64 rng(0);
    std::normal_distribution<float> normal;
    Tensor x = Tensor::empty({batch, unet->config.in_channels, 8, 8});
    for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = normal(rng);
    std::vector<int64_t> labels(batch);
    std::vector<double> t(batch);
    for (int b = 0; b < batch; ++b) {
      labels[b] = b % 10;
      t[b] = 999 - 20 * (b % 50);
    }
    Tensor context = embedding(table, labels);

    FlopCounter::enabled() = true;
    {
      NoGradGuard g;
      unet->forward(x, t, context);
    }
    const double fwd_flops = double(FlopCounter::count().load());
    FlopCounter::enabled() = false;

    std::vector<double> nograd, train;
    for (int r = 0; r < reps; ++r) {
      auto s = Clock::now();
      {
        NoGradGuard g;
        unet->forward(x, t, context);
      }
      nograd.push_back(std::chrono::duration<double>(Clock::now() - s).count());
    }
    for (auto& [name, p] : unet->named_parameters()) p->set_requires_grad(true);
    for (int r = 0; r < (backward ? reps + 1 : 0); ++r) {
      for (auto& [name, p] : unet->named_parameters()) p->zero_grad();
      auto s = Clock::now();
      sum(unet->forward(x, t, context)).backward();
      if (r > 0) train.push_back(std::chrono::duration<double>(Clock::now() - s).count());  // first run allocates grads
    }
    const double gemm = eigen_gemm_gflops();
    if (train.empty()) train.push_back(0);
    const double tn = median(nograd), tt = median(train);
    std::printf("fmnist-ldm-v1 UNet, batch %d, %d threads, %.2f GFLOP per forward (GEMM-based ops)\n", batch, threads,
                fwd_flops * 1e-9);
    std::printf("%-22s %10s %10s %10s %12s\n", "mode", "median s", "samples/s", "GFLOP/s", "of Eigen GEMM");
    std::printf("%-22s %10.4f %10.1f %10.1f %11.0f%%\n", "no-grad forward", tn, batch / tn, fwd_flops / tn * 1e-9,
                100 * fwd_flops / tn * 1e-9 / gemm);
    std::printf("%-22s %10.4f %10.1f %10.1f %11.0f%%\n", "forward + backward", tt, batch / tt,
                3 * fwd_flops / tt * 1e-9, 100 * 3 * fwd_flops / tt * 1e-9 / gemm);
    std::printf("%-22s %10s %10s %10.1f\n", "GEMM 1024^3 (Eigen)", "", "", gemm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_unet: %s\n", e.what());
    return 1;
  }
  return 0;
}
