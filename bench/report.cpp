// bench/report: a run's HTML report (the quickstart's, or any lcd-train run's). Sections: the run's identity
// (version, commit, date, host, CPU and its vector extensions, threads, precision) and its adapters with a
// copy-paste lcm-sample line; the comparison grids, one captioned figure per row with the class names over
// the columns (from the model's labels.json), scaled to the page's column; the loss curve as inline SVG with
// axes and ticks, smoothed (an exponential moving average) over the faint raw trace; the per-checkpoint sample
// grids of samples/ as a timeline; the quality table as a real table, best FID per step count marked;
// timings; the resolved config. Grids are read in colour (RGB), so an RGB model keeps its colours.
// Usage: report --run DIR --grid LABEL=FILE.png (repeatable, top to bottom) [--model DIR] [--quality FILE]
//        [--timings FILE]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/cpu/features.h"
#include "autograd/errors.h"
#include "datasets/png.h"
#include "infer/tools/cli.h"
#include "infer/tools/version.h"

using namespace lcd;
namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : c == '\'' ? "&#39;" : std::string(1, c);
  return out;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// ---- the loss curve ----

// Loss (log scale) against step: the raw trace faint, its exponential moving average (span ~2% of the run)
// bold, ticks at every decade and its 2× and 5× points on y, at round steps on x.
std::string loss_svg(const std::string& metrics_path) {
  std::ifstream in(metrics_path);
  std::vector<std::pair<double, double>> points;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("loss") || !j["loss"].is_number()) continue;
    if (j["loss"].get<double>() > 0) points.emplace_back(j["step"].get<double>(), j["loss"].get<double>());
  }
  if (points.size() < 2) return "<p>(no loss curve: fewer than two steps)</p>";
  const double w = 720, h = 300, left = 64, right = 16, top = 16, bottom = 40;
  double max_step = 0, lo = 1e300, hi = -1e300;
  for (auto& [s, l] : points) {
    max_step = std::max(max_step, s);
    lo = std::min(lo, std::log10(l));
    hi = std::max(hi, std::log10(l));
  }
  if (hi - lo < 1e-9) hi = lo + 1;
  auto x = [&](double s) { return left + (w - left - right) * s / max_step; };
  auto y = [&](double l) { return top + (h - top - bottom) * (hi - std::log10(l)) / (hi - lo); };
  std::ostringstream svg;
  svg << "<svg viewBox='0 0 " << w << " " << h << "' style='width:100%;max-width:" << w
      << "px;background:#fff;border:1px solid #ccc' font-size='12' font-family='sans-serif'>";
  // y ticks: 1, 2, 5 × 10^k inside the range, or every 1..9 × 10^k, or round linear steps, whichever first
  // gives three or more
  std::vector<double> ticks;
  for (const std::vector<double>& mantissas : {std::vector<double>{1, 2, 5}, std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
    ticks.clear();
    for (int k = static_cast<int>(std::floor(lo)); k <= static_cast<int>(std::ceil(hi)); ++k)
      for (double m : mantissas) {
        const double v = m * std::pow(10.0, k);
        if (std::log10(v) >= lo - 1e-9 && std::log10(v) <= hi + 1e-9) ticks.push_back(v);
      }
    if (ticks.size() >= 3) break;
  }
  if (ticks.size() < 3) {  // a narrow range: round linear steps
    const double a = std::pow(10.0, lo), b = std::pow(10.0, hi);
    double d = std::pow(10.0, std::floor(std::log10(b - a)));
    while ((b - a) / d < 3) d /= 2;
    ticks.clear();
    for (double v = std::ceil(a / d) * d; v <= b * (1 + 1e-9); v += d) ticks.push_back(v);
  }
  for (double v : ticks)
    svg << "<line x1='" << left << "' x2='" << w - right << "' y1='" << y(v) << "' y2='" << y(v)
        << "' stroke='#eee'/><text x='" << left - 6 << "' y='" << y(v) + 4 << "' text-anchor='end'>" << fmt("%g", v) << "</text>";
  // x ticks: a round step size giving 4–10 ticks
  double step = std::pow(10.0, std::floor(std::log10(max_step)));
  while (max_step / step < 4) step /= 2;
  for (double s = 0; s <= max_step + 1e-9; s += step)
    svg << "<line x1='" << x(s) << "' x2='" << x(s) << "' y1='" << top << "' y2='" << h - bottom << "' stroke='#eee'/><text x='"
        << x(s) << "' y='" << h - bottom + 16 << "' text-anchor='middle'>" << fmt("%g", s) << "</text>";
  svg << "<rect x='" << left << "' y='" << top << "' width='" << w - left - right << "' height='" << h - top - bottom
      << "' fill='none' stroke='#999'/>";
  svg << "<polyline fill='none' stroke='#1f77b4' stroke-opacity='0.25' stroke-width='1' points='";
  for (auto& [s, l] : points) svg << x(s) << "," << y(l) << " ";
  svg << "'/><polyline fill='none' stroke='#1f77b4' stroke-width='2.2' points='";
  const double alpha = 2.0 / (std::max<double>(2, 0.02 * static_cast<double>(points.size())) + 1);
  double ema = std::log10(points.front().second);
  for (auto& [s, l] : points) {
    ema = alpha * std::log10(l) + (1 - alpha) * ema;
    svg << x(s) << "," << y(std::pow(10.0, ema)) << " ";
  }
  svg << "'/><text x='" << (left + w - right) / 2 << "' y='" << h - 6 << "' text-anchor='middle'>training step</text>"
      << "<text transform='translate(14," << (top + h - bottom) / 2 << ") rotate(-90)' text-anchor='middle'>loss (log scale)</text></svg>";
  return svg.str();
}

// ---- the quality table ----

// bench/quality's rows ("sampler steps guidance FID acc%") as an HTML table; the lowest FID of each step count
// is marked.
std::string quality_table(const std::string& text) {
  struct Row {
    std::string sampler;
    int steps;
    double guidance, fid;
    std::string acc;
  };
  std::vector<Row> rows;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    Row r;
    if (f >> r.sampler >> r.steps >> r.guidance >> r.fid >> r.acc && r.acc.back() == '%') rows.push_back(r);
  }
  if (rows.empty()) return "<pre>" + escape(text) + "</pre>";
  std::map<int, double> best;
  for (const Row& r : rows) best[r.steps] = best.count(r.steps) ? std::min(best[r.steps], r.fid) : r.fid;
  std::ostringstream html;
  html << "<p>FID of the metric classifier's features against the Fashion-MNIST test set (<b>lower is better</b>) and "
          "class accuracy (higher is better); ★ marks the best FID at each step count.</p>"
          "<table class='q'><tr><th>sampler</th><th>steps</th><th>guidance</th><th>FID ↓</th><th>class accuracy ↑</th></tr>";
  for (const Row& r : rows) {
    const bool top = r.fid == best[r.steps];
    html << "<tr" << (top ? " class='best'" : "") << "><td>" << escape(r.sampler) << "</td><td>" << r.steps << "</td><td>"
         << fmt("%.2f", r.guidance) << "</td><td>" << fmt("%.2f", r.fid) << (top ? " ★" : "") << "</td><td>"
         << escape(r.acc) << "</td></tr>";
  }
  html << "</table>";
  return html.str();
}

// ---- the run's identity ----

std::string identity(const std::string& run, const nlohmann::json& config) {
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M %Z", std::localtime(&now));
  const cpu::Features& f = cpu::features();
  const std::string flags = f.flags().empty() ? "no AVX-512 or bf16" : f.flags();
  std::ostringstream html;
  html << "<table class='id'>"
       << "<tr><th>lcdkit</th><td>" << escape(version_line("lcdkit")) << "</td></tr>"
       << "<tr><th>report written</th><td>" << date << " on " << escape(host) << "</td></tr>"
       << "<tr><th>CPU</th><td>" << escape(f.model) << " (" << escape(flags) << "; oneDNN kernels "
       << escape(cpu::kernel_isa()) << ")</td></tr>";
  if (config.is_object()) {
    auto get = [&](const char* a, const char* b) -> std::string {
      if (!config.contains(a) || (b && !config[a].contains(b))) return "?";
      const nlohmann::json& v = b ? config[a][b] : config[a];
      return v.is_string() ? v.get<std::string>() : v.dump();
    };
    const std::string threads = get("threads", nullptr) == "0" ? "all cores" : get("threads", nullptr);
    html << "<tr><th>objective</th><td>" << escape(get("objective", nullptr)) << ", " << escape(get("train", "steps"))
         << " steps at batch " << escape(get("train", "batch_size")) << ", precision " << escape(get("train", "precision"))
         << ", threads: " << escape(threads) << "</td></tr>"
         << "<tr><th>teacher</th><td>" << escape(get("model", nullptr)) << "</td></tr>";
  }
  const fs::path adapter = fs::path(run) / "adapter";
  if (fs::exists(adapter)) {
    html << "<tr><th>adapters</th><td>" << escape(adapter.string()) << "/: ";
    bool first = true;
    for (const char* file : {"pytorch_lora_weights.safetensors", "adapter_model.safetensors", "adapter_kohya.safetensors", "adapter.h5"})
      if (fs::exists(adapter / file)) {
        html << (first ? "" : ", ") << "<code>" << file << "</code>";
        first = false;
      }
    const std::string model = config.is_object() && config.contains("model") ? config["model"].get<std::string>() : "MODEL";
    html << "</td></tr><tr><th>sample with it</th><td><code>lcm-sample --model " << escape(model) << " --lora "
         << escape((adapter / "pytorch_lora_weights.safetensors").string())
         << " --labels all --steps 4 --out samples.png</code></td></tr>";
  }
  html << "</table>";
  return html.str();
}

// ---- the grids ----

struct Grid {
  std::string label, file;
  Image8 image;
};

// A captioned figure: class names over the columns when the grid has one image per class.
std::string figure(const Grid& g, const std::string& src, const std::vector<std::string>& classes) {
  std::ostringstream html;
  html << "<figure><figcaption>" << escape(g.label) << "</figcaption>";
  if (!classes.empty()) {
    html << "<div class='cols' style='grid-template-columns:repeat(" << classes.size() << ",1fr)'>";
    for (const auto& c : classes) html << "<span>" << escape(c) << "</span>";
    html << "</div>";
  }
  html << "<img src='" << escape(src) << "' alt='" << escape(g.label) << "'></figure>";
  return html.str();
}

// The per-checkpoint grids lcd-train wrote to samples/ (step-NNNNNN-<sampler><steps>.png), in step order.
std::string timeline(const std::string& run) {
  const fs::path dir = fs::path(run) / "samples";
  if (!fs::exists(dir)) return "";
  std::map<std::string, std::vector<std::string>> by_kind;  // "lcm4" → files in step order
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || e.path().extension() != ".png" || name.size() < 16) continue;
    by_kind[name.substr(12, name.size() - 16)].push_back(name);
  }
  if (by_kind.empty()) return "";
  std::ostringstream html;
  html << "<h2>Samples along the run</h2><p>The grids lcd-train drew every <code>samples.every</code> steps (fixed "
          "noise and labels), one row per checkpoint.</p>";
  for (auto& [kind, files] : by_kind) {
    std::sort(files.begin(), files.end());
    html << "<h3>" << escape(kind) << "</h3><div class='timeline'>";
    for (const auto& f : files)
      html << "<figure><figcaption>step " << std::stoi(f.substr(5, 6)) << "</figcaption><img src='samples/" << escape(f)
           << "' alt='" << escape(f) << "'></figure>";
    html << "</div>";
  }
  return html.str();
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("report", [&] {
    std::string run, quality, timings, model;
    std::vector<std::string> grid_specs;
    ArgParser p("report", "--run DIR --grid LABEL=FILE.png... [--model DIR] [--quality FILE] [--timings FILE]",
                "Writes DIR/comparison.png and DIR/report.html.");
    p.option("--run", "DIR", "run directory (metrics.jsonl, config.json; outputs go here)", &run);
    p.repeated("--grid", "LABEL=FILE", "a labelled sample grid, top to bottom", &grid_specs);
    p.option("--model", "DIR", "model whose labels.json names the grid columns (default: the run's model)", &model);
    p.option("--quality", "FILE", "bench/quality's table to include", &quality);
    p.option("--timings", "FILE", "timings (text) to include", &timings);
    if (!p.parse(argc, argv)) return 0;
    if (run.empty() || grid_specs.empty()) throw UsageError("give --run DIR and at least one --grid");
    nlohmann::json config;
    if (fs::exists(fs::path(run) / "config.json")) config = nlohmann::json::parse(read_text((fs::path(run) / "config.json").string()), nullptr, false);
    if (model.empty() && config.is_object() && config.contains("model")) model = config["model"].get<std::string>();
    std::vector<std::string> classes;
    if (!model.empty() && fs::exists(fs::path(model) / "labels.json")) {
      const auto j = nlohmann::json::parse(read_text((fs::path(model) / "labels.json").string()), nullptr, false);
      if (j.is_array())
        for (const auto& c : j) classes.push_back(c.is_string() ? c.get<std::string>() : c.dump());
    }

    // The grids, in colour, and one comparison image of them stacked with a 4-pixel black gap.
    std::vector<Grid> grids;
    int width = 0, height = 0;
    for (const auto& g : grid_specs) {
      const auto eq = g.find('=');
      if (eq == std::string::npos) throw UsageError("--grid expects LABEL=FILE, got \"" + g + "\"");
      grids.push_back({g.substr(0, eq), g.substr(eq + 1), read_png(g.substr(eq + 1), 3)});
      width = std::max(width, grids.back().image.width);
      height += grids.back().image.height + 4;
    }
    Image8 stacked{width, height, 3, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3, 0), {}};
    int y = 0;
    for (const Grid& g : grids) {
      for (int r = 0; r < g.image.height; ++r)
        std::memcpy(stacked.pixels.data() + static_cast<size_t>(y + r) * width * 3,
                    g.image.pixels.data() + static_cast<size_t>(r) * g.image.width * 3, static_cast<size_t>(g.image.width) * 3);
      y += g.image.height + 4;
    }
    const std::string comparison = (fs::path(run) / "comparison.png").string();
    write_png(comparison, stacked);

    std::ostringstream html;
    html << "<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
         << "<title>lcdkit report: " << escape(fs::path(run).lexically_normal().filename().string()) << "</title><style>"
         << "body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
         << "img{image-rendering:pixelated;width:100%;height:auto;display:block}"
         << "figure{margin:0 0 1.2em}figcaption{font-weight:bold;margin:.3em 0}"
         << ".cols{display:grid;font-size:12px;color:#555;text-align:center}"
         << ".timeline{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:.6em}"
         << ".timeline figcaption{font-weight:normal;font-size:12px}"
         << "table{border-collapse:collapse}td,th{padding:.25em .8em;text-align:left;vertical-align:top}"
         << "table.q td:nth-child(n+2),table.q th:nth-child(n+2){text-align:right}"
         << "table.q tr:nth-child(even){background:#f6f6f6}tr.best td{font-weight:bold}"
         << "table.id th{color:#555;font-weight:normal;white-space:nowrap}table.id td{overflow-wrap:anywhere}code{word-break:break-all}"
         << "pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style></head><body>"
         << "<h1>lcdkit report: LCM-LoRA distilled from " << escape(fs::path(model).lexically_normal().filename().string()) << "</h1>"
         << identity(run, config) << "<h2>Samples</h2><p>Every row draws the same noise and labels, one class per column.</p>";
    for (const Grid& g : grids) html << figure(g, fs::relative(fs::absolute(g.file), fs::absolute(run)).string(), classes);
    html << "<h2>Training loss</h2>" << loss_svg((fs::path(run) / "metrics.jsonl").string());
    html << timeline(run);
    if (!quality.empty()) html << "<h2>Quality</h2>" << quality_table(read_text(quality));
    if (!timings.empty()) html << "<h2>Timings</h2><pre>" << escape(read_text(timings)) << "</pre>";
    if (config.is_object()) html << "<h2>Run configuration</h2><pre>" << escape(config.dump(2)) << "</pre>";
    // Marks whether anything is wider than the window, for tests/report_browser_test.sh.
    html << "<script>addEventListener('load',()=>{document.body.dataset.overflow="
            "document.documentElement.scrollWidth>document.documentElement.clientWidth})</script></body></html>\n";
    write_file_atomically((fs::path(run) / "report.html").string(), html.str());
    std::printf("wrote %s and %s/report.html\n", comparison.c_str(), run.c_str());
    return 0;
  });
}
