#pragma once
// A temporary directory for one test process: created on first use, removed with everything in it
// when the process exits.

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace afd::test_support {

/// `<temp>/<prefix>-<pid>`, created by the constructor and removed by the destructor.
class process_scratch {
 public:
  explicit process_scratch(const std::string& prefix)
      : path(std::filesystem::temp_directory_path() / (prefix + "-" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path);
  }
  process_scratch(const process_scratch&) = delete;
  process_scratch& operator=(const process_scratch&) = delete;
  ~process_scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }

  const std::filesystem::path path;
};

}  // namespace afd::test_support
