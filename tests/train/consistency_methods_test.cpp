// The LCD variants' pieces against independent computations: the continuous-time schedule; one second-order
// Ψ step (DPM-Solver-2, DPM-Solver++(2S)) worked in double from reference/lcd-spec.md §4.5 with a guided toy
// teacher; the three solvers' convergence order on Gaussian data, whose probability-flow ODE is solved
// exactly; PCM's consistency function and its target at a phase edge, and LCF's forward-process point, on a
// tiny UNet.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "autograd/random.h"
#include "tests/tiny_unet_config.h"
#include "tests/train/tiny_model.h"
#include "train/lcd_objective.h"
#include "train/teacher_solver.h"

namespace lcd {
namespace {

TEST(ContinuousSchedule, AgreesWithTheDiscreteOneAndInvertsLambda) {
  const NoiseSchedule s = NoiseSchedule::scaled_linear();
  for (int t : {0, 1, 19, 500, 998, 999}) {
    EXPECT_NEAR(s.alpha_at(t), s.alpha(t), 1e-14);
    EXPECT_NEAR(s.sigma_at(t), s.sigma(t), 1e-12);
  }
  // Between two timesteps log α is linear: the midpoint's log α is the mean of its neighbours'.
  EXPECT_NEAR(std::log(s.alpha_at(400.5)), 0.5 * (std::log(s.alpha(400)) + std::log(s.alpha(401))), 1e-14);
  for (double t : {0.0, 3.25, 250.0, 612.7, 999.0}) EXPECT_NEAR(s.time_of_lambda(s.lambda_at(t)), t, 1e-6) << t;
}

// A guided toy teacher with ε-predictions affine in z, different for cond and uncond, recording its calls.
struct ToyTeacher {
  const NoiseSchedule& s;
  std::vector<double> guidance;
  std::vector<std::vector<double>> times;
  static double eps_c(double z) { return 0.4 * z + 0.05; }
  static double eps_u(double z) { return 0.2 * z - 0.1; }
  GuidedPrediction operator()(const Tensor& z, const std::vector<double>& t) {
    times.push_back(t);
    const int64_t n = z.size(0), per = z.numel() / n;
    Tensor x0 = Tensor::empty(z.shape()), eps = Tensor::empty(z.shape());
    for (int64_t i = 0; i < n; ++i) {
      const double a = s.alpha_at(t[i]), sg = s.sigma_at(t[i]), w = guidance[i];
      for (int64_t k = i * per; k < (i + 1) * per; ++k) {
        const double zk = z.data()[k], ec = eps_c(zk), eu = eps_u(zk);
        const double xc = (zk - sg * ec) / a, xu = (zk - sg * eu) / a;
        x0.data()[k] = static_cast<float>(xu + w * (xc - xu));
        eps.data()[k] = static_cast<float>(eu + w * (ec - eu));
      }
    }
    return {x0, eps};
  }
};

TEST(TeacherSolver, OneSecondOrderStepMatchesTheFormulasInDouble) {
  const NoiseSchedule s = NoiseSchedule::scaled_linear();
  Rng rng(3);
  const Tensor z_s = rng.normal_tensor({2, 1, 2, 2});
  const std::vector<int> t_s{600, 39}, t_e{580, 19};
  const std::vector<double> w{1.5, 3.0};
  for (OdeSolver solver : {OdeSolver::kDpmSolver2, OdeSolver::kDpmSolverPP2S}) {
    ToyTeacher teacher{s, w, {}};
    const GuidedPrediction at_s = teacher(z_s, {600.0, 39.0});
    const Tensor z_e = teacher_solve(solver, s, std::ref(teacher), z_s, at_s, t_s, t_e);
    ASSERT_EQ(teacher.times.size(), 2u) << "one extra guided evaluation, at the midpoint";
    for (int i = 0; i < 2; ++i) {
      const double t_m = teacher.times[1][i];
      const double l_s = s.lambda_at(t_s[i]), l_e = s.lambda_at(t_e[i]), h = l_e - l_s;
      EXPECT_NEAR(s.lambda_at(t_m), l_s + 0.5 * h, 1e-9) << "λ of the midpoint";
      EXPECT_GT(t_m, t_e[i]);
      EXPECT_LT(t_m, t_s[i]);
      const double as = s.alpha(t_s[i]), ss = s.sigma(t_s[i]), ae = s.alpha(t_e[i]), se = s.sigma(t_e[i]);
      const double am = s.alpha_at(t_m), sm = s.sigma_at(t_m);
      for (int k = 0; k < 4; ++k) {
        const double z = z_s.data()[i * 4 + k];
        auto guided_eps = [&](double zz) { return ToyTeacher::eps_u(zz) + w[i] * (ToyTeacher::eps_c(zz) - ToyTeacher::eps_u(zz)); };
        double want;
        if (solver == OdeSolver::kDpmSolver2) {
          const double u = (am / as) * z - sm * std::expm1(h / 2) * guided_eps(z);
          want = (ae / as) * z - se * std::expm1(h) * guided_eps(u);
        } else {
          const double x0_s = (z - ss * guided_eps(z)) / as;
          const double u = (sm / ss) * z - am * std::expm1(-h / 2) * x0_s;
          const double x0_m = (u - sm * guided_eps(u)) / am;
          want = (se / ss) * z - ae * std::expm1(-h) * x0_m;
        }
        EXPECT_NEAR(z_e.data()[i * 4 + k], want, 2e-5 * (1 + std::abs(want)));
      }
    }
  }
}

// Data x0 ~ N(0, c²): x̂0(z, t) = α c² z/(α²c² + σ²), and the ODE keeps z/√(α²c² + σ²) constant.
TEST(TeacherSolver, SolversConvergeAtTheirOrderOnGaussianData) {
  const NoiseSchedule s = NoiseSchedule::scaled_linear();
  const double c2 = 0.25;
  auto teacher = [&](const Tensor& z, const std::vector<double>& t) {
    const double a = s.alpha_at(t[0]), sg = s.sigma_at(t[0]), d = a * a * c2 + sg * sg;
    return GuidedPrediction{scale(z, a * c2 / d), scale(z, sg / d)};
  };
  const Tensor z = Tensor::full({1, 1, 1, 1}, 1.0f);
  const int t_s = 700;
  std::map<OdeSolver, std::vector<double>> error;
  std::vector<double> ddim_vs_dpm, dpm_vs_dpmpp;
  for (int k : {80, 40, 20}) {
    const int t_e = t_s - k;
    const double exact = std::sqrt((s.alphas_cumprod[t_e] * c2 + 1 - s.alphas_cumprod[t_e]) /
                                   (s.alphas_cumprod[t_s] * c2 + 1 - s.alphas_cumprod[t_s]));
    std::map<OdeSolver, double> got;
    for (OdeSolver solver : {OdeSolver::kDdim, OdeSolver::kDpmSolver2, OdeSolver::kDpmSolverPP2S}) {
      got[solver] = teacher_solve(solver, s, teacher, z, teacher(z, {double(t_s)}), {t_s}, {t_e}).item();
      error[solver].push_back(std::abs(got[solver] - exact));
    }
    ddim_vs_dpm.push_back(std::abs(got[OdeSolver::kDdim] - got[OdeSolver::kDpmSolver2]));
    dpm_vs_dpmpp.push_back(std::abs(got[OdeSolver::kDpmSolver2] - got[OdeSolver::kDpmSolverPP2S]));
  }
  // Halving the step: a local error of order 2 (DDIM) falls ~4×, of order 3 (the second-order solvers) ~8×
  // (measured at k = 160 → 80 → 40: 4.7, 4.4 and 9.2, 8.6; the schedule is not uniform, so not yet exactly).
  auto ratio = [](const std::vector<double>& e, int i) { return e[i] / e[i + 1]; };
  for (int i = 0; i < 2; ++i) {
    EXPECT_GT(ratio(error[OdeSolver::kDdim], i), 3.2);
    EXPECT_LT(ratio(error[OdeSolver::kDdim], i), 5.5);
    for (OdeSolver second : {OdeSolver::kDpmSolver2, OdeSolver::kDpmSolverPP2S}) {
      EXPECT_GT(ratio(error[second], i), 6.0);
      EXPECT_LT(ratio(error[second], i), 11.0);
    }
    EXPECT_GT(ratio(ddim_vs_dpm, i), 3.2);  // the solvers agree to first order (their difference is DDIM's error)
    EXPECT_LT(ratio(ddim_vs_dpm, i), 5.5);
    EXPECT_GT(ratio(dpm_vs_dpmpp, i), 6.0);  // and the two second-order ones to second order
  }
  EXPECT_LT(error[OdeSolver::kDpmSolver2][2], error[OdeSolver::kDdim][2] / 10);
}

struct TinyStep {
  UNet2DConditionModel unet{UNetConfig::from_json(testing::tiny_unet_config(6), "tiny")};
  NoiseSchedule schedule = NoiseSchedule::scaled_linear();
  Rng rng{11};
  std::unique_ptr<TrainableLora> lora;
  LcdBatch batch;
  TinyStep(std::vector<int> j) {
    testing::randomize_module(unet, 4, 0.2f);
    LoraSettings ls;
    ls.rank = 2;
    lora = std::make_unique<TrainableLora>(unet, ls, rng);
    for (int64_t i = 0; i < lora->online().size(); ++i) lora->online().values()[i] += 0.05f * float(rng.normal());
    lora->update_ema(0.0);
    const int64_t n = static_cast<int64_t>(j.size());
    batch.z0 = rng.normal_tensor({n, 2, 8, 8});
    batch.eps = rng.normal_tensor({n, 2, 8, 8});
    batch.cond = rng.normal_tensor({n, 3, 6});
    batch.uncond = rng.normal_tensor({n, 3, 6});
    batch.j = j;
    batch.guidance.assign(n, 2.0);
  }
  // The student's raw output at (z_s, t_s), recomputed here.
  Tensor raw_student(const Tensor& z_s, const std::vector<int>& t_s) {
    NoGradGuard g;
    lora->use(TrainableLora::Mode::kStudent);
    return unet.forward(z_s, std::vector<double>(t_s.begin(), t_s.end()), batch.cond);
  }
};

TEST(PcmStep, MapsToThePhaseEdgeAndTakesZeAsTargetThere) {
  // 4 phases of 50: j = 12 starts a phase (t_s 259 → t_e 239, its lower edge); j = 20 and 49 lie inside.
  TinyStep f({12, 20, 49});
  LcdSettings settings;
  settings.phases = 4;
  LcdStep step = lcd_forward(f.unet, *f.lora, f.schedule, settings, f.batch);
  EXPECT_EQ(step.t_s, (std::vector<int>{259, 419, 999}));
  EXPECT_EQ(step.t_e, (std::vector<int>{239, 399, 979}));
  EXPECT_EQ(step.edge, (std::vector<int>{239, 239, 739}));
  // Student: √ᾱ_e x̂0 + √(1 − ᾱ_e) ε̂ from its own output, worked in double.
  const Tensor raw = f.raw_student(step.z_s, step.t_s);
  const int64_t per = raw.numel() / 3;
  for (int i = 0; i < 3; ++i) {
    const double at = f.schedule.alphas_cumprod[step.t_s[i]], ae = f.schedule.alphas_cumprod[step.edge[i]];
    for (int64_t k = i * per; k < (i + 1) * per; ++k) {
      const double eps = raw.data()[k], x0 = (step.z_s.data()[k] - std::sqrt(1 - at) * eps) / std::sqrt(at);
      const double want = std::sqrt(ae) * x0 + std::sqrt(1 - ae) * eps;
      ASSERT_NEAR(step.pred.data()[k], want, 1e-4 * (1 + std::abs(want))) << i;
    }
  }
  // At the edge the target is z_e itself; inside a phase it is the target network's jump to the same edge.
  for (int64_t k = 0; k < per; ++k) ASSERT_EQ(step.target.data()[k], step.z_e.data()[k]);
  double differs = 0;
  for (int64_t k = per; k < 3 * per; ++k) differs = std::max(differs, double(std::abs(step.target.data()[k] - step.z_e.data()[k])));
  EXPECT_GT(differs, 1e-3);
}

// Grid indices: uniform draws unchanged at fraction 0 (old runs reproduce), and at fraction p the top point
// takes p + (1 − p)/N of the samples, the others (1 − p)/N each (binomial bounds, 5σ).
TEST(LcdGridIndex, TopStepFractionSendsThatShareToTheTopPoint) {
  LcdSettings settings;
  settings.num_ddim_timesteps = 50;
  Rng a(7), b(7);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(draw_grid_index(a, settings), b.uniform_int(50)) << "draw " << i;

  settings.top_step_fraction = 0.3;
  const int n = 20000, N = 50;
  std::vector<int> count(N, 0);
  Rng r(11);
  for (int i = 0; i < n; ++i) {
    const int j = draw_grid_index(r, settings);
    ASSERT_GE(j, 0);
    ASSERT_LT(j, N);
    ++count[j];
  }
  const double p_top = 0.3 + 0.7 / N, p_other = 0.7 / N;
  EXPECT_NEAR(count[N - 1] / double(n), p_top, 5 * std::sqrt(p_top * (1 - p_top) / n));
  for (int j = 0; j + 1 < N; ++j)
    EXPECT_NEAR(count[j] / double(n), p_other, 5 * std::sqrt(p_other * (1 - p_other) / n)) << "index " << j;
}

TEST(LcfStep, TakesTheNextPointOnTheForwardProcessWithoutATeacher) {
  TinyStep f({0, 7, 49});
  LcdSettings settings;
  settings.teacher_free = true;
  LcdStep step = lcd_forward(f.unet, *f.lora, f.schedule, settings, f.batch);
  EXPECT_FALSE(step.eps_cond.defined()) << "no teacher evaluation";
  const int64_t per = f.batch.z0.numel() / 3;
  for (int i = 0; i < 3; ++i) {
    const double a = f.schedule.alpha(step.t_e[i]), sg = f.schedule.sigma(step.t_e[i]);
    for (int64_t k = i * per; k < (i + 1) * per; ++k) {
      const double want = a * f.batch.z0.data()[k] + sg * f.batch.eps.data()[k];
      ASSERT_NEAR(step.z_e.data()[k], want, 1e-5 * (1 + std::abs(want)));
    }
  }
  EXPECT_GT(step.loss.item(), 0.0);
}

TEST(LcdStep, SecondOrderSolversEvaluateTheTeacherAtTheMidpointAndStayCloseToDdim) {
  TinyStep f({3, 30, 49});
  std::map<OdeSolver, Tensor> z_e;
  for (OdeSolver solver : {OdeSolver::kDdim, OdeSolver::kDpmSolver2, OdeSolver::kDpmSolverPP2S}) {
    LcdSettings settings;
    settings.solver = solver;
    z_e[solver] = lcd_forward(f.unet, *f.lora, f.schedule, settings, f.batch).z_e;
  }
  // One Ψ step of k = 20 on a smooth (random) teacher: the solvers differ, by far less than the step moves z.
  auto max_diff = [](const Tensor& a, const Tensor& b) {
    double m = 0;
    for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, double(std::abs(a.data()[i] - b.data()[i])));
    return m;
  };
  const double d2 = max_diff(z_e[OdeSolver::kDdim], z_e[OdeSolver::kDpmSolver2]);
  const double d2s = max_diff(z_e[OdeSolver::kDdim], z_e[OdeSolver::kDpmSolverPP2S]);
  EXPECT_GT(d2, 1e-6);
  EXPECT_GT(d2s, 1e-6);
  EXPECT_LT(d2, 0.1);
  EXPECT_LT(d2s, 0.1);
}

}  // namespace
}  // namespace lcd
