#pragma once
/// Worker processes started by the launcher: fork + exec with the launcher as their parent (they
/// get SIGTERM when it dies, so no worker outlives a killed launcher), stdout and stderr in a log
/// file of the run directory, reaped without blocking. Plus the run directory and log tails.

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::launch {

/// A child process. Not copyable; the owner reaps it (poll/wait) or it stays a zombie until exit.
class child_process {
 public:
  /// Starts `argv` (argv[0] looked up in PATH when it has no '/') with stdin from /dev/null and
  /// stdout + stderr appended to `log_path`. The child runs in its own process group (a Ctrl-C in
  /// the launcher's terminal reaches only the launcher, which stops the workers in order) and gets
  /// SIGTERM when the launcher dies. With `stdin_pipe` its stdin is a pipe this object holds open
  /// until close_stdin() or destruction: the child reads end-of-file when its owner lets go or
  /// dies (an `ssh` child passes that on to the remote command). errc::io_error when the log cannot
  /// be opened or exec fails.
  static expected<child_process> spawn(const std::vector<std::string>& argv, const std::string& log_path,
                                       bool stdin_pipe = false);

  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process();

  /// Its process id.
  pid_t pid() const noexcept { return pid_; }
  /// True until it has been reaped.
  bool running() const noexcept { return !status_.has_value(); }
  /// Reaps it if it has exited (never blocks); its wait status once reaped.
  std::optional<int> poll();
  /// Waits up to `timeout_ms` for it to exit; its wait status, or nullopt if still running.
  std::optional<int> wait_for(int timeout_ms);
  /// Sends `sig` while it runs.
  void signal(int sig) const;
  /// Its wait status once reaped.
  std::optional<int> status() const noexcept { return status_; }
  /// Closes the write end of its stdin pipe (spawn with `stdin_pipe`): it reads end-of-file.
  void close_stdin() noexcept;

 private:
  child_process(pid_t pid, int stdin_fd) : pid_(pid), stdin_fd_(stdin_fd) {}
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  std::optional<int> status_;
};

/// "exited with status 3", "was killed by signal 9 (Killed)".
std::string describe_wait_status(int status);

/// True when the wait status is a normal exit with code 0.
bool exited_cleanly(int status);

/// The last `lines` lines of the file at `path` (empty when it cannot be read).
std::string tail_lines(const std::string& path, int lines);

/// The run directory's path (not created): $XDG_RUNTIME_DIR/afd-NAME-PORT when that variable names
/// a writable directory, else /tmp/afd-NAME-PORT.
std::string run_directory_path(const std::string& cluster_name, int port);

/// Creates (mode 0700) and returns the run directory of a cluster: $XDG_RUNTIME_DIR/afd-NAME-PORT
/// when that variable names a writable directory, else /tmp/afd-NAME-PORT. errc::io_error naming the
/// path when it cannot be created.
expected<std::string> make_run_directory(const std::string& cluster_name, int port);

/// The path of the running `afd` executable (/proc/self/exe), so that children run the same build.
std::string self_executable();

}  // namespace afd::launch
