// Writing files so that nothing is lost: bytes go to a temp file in the same folder, which is then renamed
// over the target. Every writer in lcdkit (safetensors, PNG, HDF5, JSON) goes through here.
#pragma once
#include <string>

namespace lcd {

void write_file_atomically(const std::string& path, const std::string& bytes);
// A temp path beside `path` for writers that need a file name (HDF5); rename it with commit_temp_file.
std::string temp_path_for(const std::string& path);
void commit_temp_file(const std::string& temp, const std::string& path);

}  // namespace lcd
