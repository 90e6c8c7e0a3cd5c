#pragma once
// Hugging Face's own implementations from npm (tests/text/npm), installed once into the build tree
// and run through node: the oracles of the text tests.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <sys/file.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace afd::text::testing {

/// Runs `command` through the shell; returns (exit status, stdout).
inline std::pair<int, std::string> run_command(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return {-1, out};
  char buffer[65536];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The npm packages, installed with `npm ci` into the build tree once per package-lock.json.
class npm_oracle {
 public:
  /// Whether the packages are there.
  enum class state { ready, unreachable, failed };

  /// Installs (when needed, once per process); `why` says why not when not ready. `unreachable`
  /// (npm's registry cannot be reached) is the only reason a test may skip.
  static state ensure(std::string& why) {
    static std::string first_why;
    static const state outcome = install(first_why);
    why = first_why;
    return outcome;
  }

  static std::filesystem::path dir() { return AFD_TEXT_NPM_DIR; }

 private:
  static state install(std::string& why) {
    namespace fs = std::filesystem;
    const fs::path source = AFD_TEXT_NPM_SOURCE, dir = AFD_TEXT_NPM_DIR;
    fs::create_directories(dir);
    // One installer at a time across concurrently running test processes.
    const int lock = ::open((dir / ".install.lock").c_str(), O_CREAT | O_RDWR, 0644);
    if (lock >= 0) ::flock(lock, LOCK_EX);
    for (const char* f : {"package.json", "package-lock.json", "oracle.js"})
      fs::copy_file(source / f, dir / f, fs::copy_options::overwrite_existing);
    const std::string lock_text = read_text(source / "package-lock.json");
    state outcome = state::ready;
    if (read_text(dir / ".installed-lock") != lock_text || !fs::exists(dir / "node_modules")) {
      const auto [rc, out] = run_command("cd '" + dir.string() + "' && npm ci --no-audit --no-fund 2>&1");
      if (rc == 0) {
        std::ofstream(dir / ".installed-lock", std::ios::binary) << lock_text;
      } else {
        const auto [ping_rc, ping_out] = run_command("cd '" + dir.string() + "' && npm ping 2>&1");
        if (ping_rc != 0) {
          outcome = state::unreachable;
          why = "npm cannot reach its registry (npm ping: " + ping_out + ")";
        } else {
          outcome = state::failed;
          why = "npm ci failed in " + dir.string() + ":\n" + out;
        }
      }
    }
    if (lock >= 0) {
      ::flock(lock, LOCK_UN);
      ::close(lock);
    }
    return outcome;
  }

 public:
  static std::filesystem::path deepseek_dir() {
    return dir() / "node_modules" / "@lenml" / "tokenizer-deepseek_v3" / "models";
  }

  /// Runs `node oracle.js ARGS` and parses its JSON output.
  static nlohmann::json run(const std::string& args, const std::string& env = "") {
    const auto [rc, out] = run_command(env + " node '" + (dir() / "oracle.js").string() + "' " + args);
    EXPECT_EQ(rc, 0) << "node oracle.js " << args << " failed:\n" << out;
    return nlohmann::json::parse(out, nullptr, false);
  }
};

}  // namespace afd::text::testing

/// Skips the test (with the reason) when npm's registry is unreachable; fails it when the install
/// failed otherwise.
#define AFD_REQUIRE_NPM_ORACLE()                                                          \
  do {                                                                                    \
    using npm_state = ::afd::text::testing::npm_oracle::state;                            \
    std::string npm_why;                                                                  \
    const npm_state npm_outcome = ::afd::text::testing::npm_oracle::ensure(npm_why);      \
    if (npm_outcome == npm_state::unreachable) GTEST_SKIP() << npm_why;                   \
    if (npm_outcome == npm_state::failed) FAIL() << npm_why;                              \
  } while (0)
