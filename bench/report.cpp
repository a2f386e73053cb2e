// bench/report: the quickstart's HTML report. Stacks labelled sample grids into one comparison PNG, draws the
// loss curve from metrics.jsonl as inline SVG, and includes the quality table and timings.
// Usage: report --run DIR --grid LABEL=FILE.png (repeatable, top to bottom) [--quality FILE] [--timings FILE]
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/atomic_file.h"
#include "autograd/errors.h"
#include "datasets/png.h"
#include "infer/tools/cli.h"

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
  for (char c : s) out += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return out;
}

// Loss (log scale) against step as an SVG polyline.
std::string loss_svg(const std::string& metrics_path) {
  std::ifstream in(metrics_path);
  std::vector<std::pair<double, double>> points;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    if (j["loss"].is_number() && j["loss"].get<double>() > 0) points.emplace_back(j["step"].get<double>(), j["loss"].get<double>());
  }
  if (points.size() < 2) return "<p>(no loss curve: fewer than two steps)</p>";
  const double w = 640, h = 240, pad = 40;
  double max_step = 0, lo = 1e300, hi = -1e300;
  for (auto& [s, l] : points) {
    max_step = std::max(max_step, s);
    lo = std::min(lo, std::log10(l));
    hi = std::max(hi, std::log10(l));
  }
  if (hi - lo < 1e-9) hi = lo + 1;
  std::ostringstream svg;
  svg << "<svg width='" << w << "' height='" << h << "' style='background:#fff;border:1px solid #ccc'>";
  svg << "<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='";
  for (auto& [s, l] : points)
    svg << pad + (w - 2 * pad) * s / max_step << "," << h - pad - (h - 2 * pad) * (std::log10(l) - lo) / (hi - lo) << " ";
  svg << "'/>";
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<text x='%g' y='%g' font-size='12'>loss %.3g</text><text x='%g' y='%g' font-size='12'>%.3g</text>"
                "<text x='%g' y='%g' font-size='12' text-anchor='end'>step %g</text>",
                pad, pad - 8, std::pow(10, hi), pad, h - pad + 14, std::pow(10, lo), w - pad, h - pad + 14, max_step);
  svg << buf << "</svg>";
  return svg.str();
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("report", [&] {
    std::string run, quality, timings;
    std::vector<std::string> grids;
    ArgParser p("report", "--run DIR --grid LABEL=FILE.png... [--quality FILE] [--timings FILE]",
                "Writes DIR/comparison.png and DIR/report.html.");
    p.option("--run", "DIR", "run directory (metrics.jsonl; outputs go here)", &run);
    p.repeated("--grid", "LABEL=FILE", "a labelled sample grid, top to bottom", &grids);
    p.option("--quality", "FILE", "quality table (text) to include", &quality);
    p.option("--timings", "FILE", "timings (text) to include", &timings);
    if (!p.parse(argc, argv)) return 0;
    if (run.empty() || grids.empty()) throw UsageError("give --run DIR and at least one --grid");
    // One comparison image: the grids stacked, each with a 4-pixel black gap.
    std::vector<std::pair<std::string, Image8>> images;
    int width = 0, height = 0;
    for (const auto& g : grids) {
      const auto eq = g.find('=');
      if (eq == std::string::npos) throw UsageError("--grid expects LABEL=FILE, got \"" + g + "\"");
      images.emplace_back(g.substr(0, eq), read_png(g.substr(eq + 1), 1));
      width = std::max(width, images.back().second.width);
      height += images.back().second.height + 4;
    }
    Image8 stacked{width, height, 1, std::vector<uint8_t>(static_cast<size_t>(width) * height, 0), {}};
    int y = 0;
    for (auto& [label, img] : images) {
      for (int r = 0; r < img.height; ++r)
        std::memcpy(stacked.pixels.data() + static_cast<size_t>(y + r) * width, img.pixels.data() + static_cast<size_t>(r) * img.width, img.width);
      y += img.height + 4;
    }
    const std::string comparison = (fs::path(run) / "comparison.png").string();
    write_png(comparison, stacked);

    std::ostringstream html;
    html << "<!doctype html><html><head><meta charset='utf-8'><title>lcdkit quickstart report</title>"
         << "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}img{image-rendering:pixelated}"
         << "pre{background:#f6f6f6;padding:1em}td{padding:0 1em}</style></head><body>"
         << "<h1>lcdkit quickstart: LCM-LoRA distilled from fmnist-ldm-v1</h1>"
         << "<h2>Samples</h2><p>Rows, top to bottom, same labels (one class per column):</p><table>";
    for (auto& [label, img] : images) html << "<tr><td>" << escape(label) << "</td></tr>";
    html << "</table><img src='comparison.png' width='" << 3 * width << "'>";
    html << "<h2>Training loss</h2>" << loss_svg((fs::path(run) / "metrics.jsonl").string());
    if (!quality.empty()) html << "<h2>Quality</h2><pre>" << escape(read_text(quality)) << "</pre>";
    if (!timings.empty()) html << "<h2>Timings</h2><pre>" << escape(read_text(timings)) << "</pre>";
    html << "<h2>Run configuration</h2><pre>" << escape(read_text((fs::path(run) / "config.json").string())) << "</pre>";
    html << "</body></html>\n";
    write_file_atomically((fs::path(run) / "report.html").string(), html.str());
    std::printf("wrote %s and %s/report.html\n", comparison.c_str(), run.c_str());
    return 0;
  });
}
