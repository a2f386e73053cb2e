// Writing files so that nothing is lost: bytes go to a temp file in the same folder, which is flushed to disk
// (fsync), renamed over the target, and the folder fsynced, so a crash or power loss leaves either the old file
// or the new one, never an empty or partial one. Every writer in lcdkit (safetensors, PNG, HDF5, JSON) goes
// through here.
#pragma once
#include <functional>
#include <string>

namespace lcd {

void write_file_atomically(const std::string& path, const std::string& bytes);
// For writers that need a file name (HDF5): `write` fills the temp path it is given; on success the file is
// committed over `path`, on an exception the temp file is removed and the exception passes on.
void write_through_temp_file(const std::string& path, const std::function<void(const std::string& temp)>& write);
// Removes temp files (".<name>.tmp.<pid>") that a killed writer left in `dir`, except those of live processes.
// Returns how many were removed.
int remove_stale_temp_files(const std::string& dir);

}  // namespace lcd
