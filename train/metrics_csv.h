// metrics.csv: the run's metrics.jsonl as a table for spreadsheets and plotting tools, one row per step and one
// column per key (step and loss first, then by name; a key a step lacks is an empty cell). Rewritten from
// metrics.jsonl (the record) whenever the trainer flushes it at a checkpoint or at the end, so the two agree
// after a resume too.
#pragma once
#include <string>

namespace lcd {

// Writes <run_dir>/metrics.csv atomically from <run_dir>/metrics.jsonl; a line that is not a JSON object (a line
// cut by a kill, which resume repairs) is left out.
void write_metrics_csv(const std::string& run_dir);

}  // namespace lcd
