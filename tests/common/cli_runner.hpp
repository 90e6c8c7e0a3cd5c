#pragma once
// Helpers of the tests that run the `afd` executable as a user does: a file's text, a free TCP
// port on the loopback, and `afd ARGS...` run to completion with its stdout and stderr apart
// (stdout is what a user's `afd ... --json | jq` reads).

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "deploy/launch/child_process.hpp"

namespace afd::test_support {

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// A TCP port nothing listens on now (the kernel's choice of an ephemeral one).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct cli_result {
  int code = -1;       ///< exit code; 128 + signal; -1 not started; -2 timed out (then killed)
  std::string out;     ///< stdout
  std::string err;     ///< stderr
};

/// Runs `executable ARGS...` to completion within `timeout_ms`, stdout and stderr into files
/// `<dir>/stdoutN.log` and `<dir>/stderrN.log` (kept for inspection).
inline cli_result run_cli(const std::string& executable, const std::vector<std::string>& args, const std::string& dir,
                          int timeout_ms) {
  static int counter = 0;
  const std::string tag = std::to_string(++counter);
  const std::string err = dir + "/stderr" + tag + ".log";
  const std::string out = dir + "/stdout" + tag + ".log";
  std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$@\" 2>'" + err + "'", "sh", executable};
  argv.insert(argv.end(), args.begin(), args.end());
  auto c = launch::child_process::spawn(argv, out);
  if (!c) return {-1, "", c.err().message()};
  auto status = c->wait_for(timeout_ms);
  if (!status) {
    c->signal(SIGKILL);
    c->wait_for(5000);
    return {-2, read_file(out), "timed out: " + read_file(err)};
  }
  return {WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status), read_file(out), read_file(err)};
}

}  // namespace afd::test_support
