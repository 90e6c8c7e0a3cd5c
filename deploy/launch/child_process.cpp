// fork + exec of worker processes, reaping, and the run directory.
#include "deploy/launch/child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>

namespace afd::launch {

expected<child_process> child_process::spawn(const std::vector<std::string>& argv, const std::string& log_path,
                                             bool stdin_pipe) {
  if (argv.empty()) return fail(errc::invalid_argument, "empty command line");
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return fail(errc::io_error, "cannot open log file '", log_path, "': ", std::strerror(errno));
  int input[2] = {-1, -1};  // the child's stdin: the read end, or /dev/null
  if (stdin_pipe) {
    if (::pipe2(input, O_CLOEXEC) != 0) {
      const int e = errno;
      ::close(log_fd);
      return fail(errc::io_error, "pipe: ", std::strerror(e));
    }
  } else {
    input[0] = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  const int null_fd = input[0];
  auto close_input = [&] {
    if (input[1] >= 0) ::close(input[1]);
  };
  int exec_pipe[2];  // reports a failed exec (errno) to the parent; closed by a successful exec
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    close_input();
    return fail(errc::io_error, "pipe: ", std::strerror(e));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    ::close(exec_pipe[0]);
    ::close(exec_pipe[1]);
    close_input();
    return fail(errc::io_error, "fork: ", std::strerror(e));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the launcher died before prctl took effect
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP}) ::signal(sig, SIG_DFL);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    ::execvp(args[0], args.data());
    const int e = errno;
    [[maybe_unused]] auto n = ::write(exec_pipe[1], &e, sizeof(e));
    ::_exit(127);
  }
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  ::close(exec_pipe[1]);
  int exec_errno = 0;
  ssize_t got;
  do {
    got = ::read(exec_pipe[0], &exec_errno, sizeof(exec_errno));
  } while (got < 0 && errno == EINTR);
  ::close(exec_pipe[0]);
  if (got == static_cast<ssize_t>(sizeof(exec_errno))) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    close_input();
    return fail(errc::io_error, "cannot run '", argv[0], "': ", std::strerror(exec_errno));
  }
  return child_process(pid, input[1]);
}

child_process::child_process(child_process&& other) noexcept
    : pid_(other.pid_), stdin_fd_(other.stdin_fd_), status_(other.status_) {
  other.pid_ = -1;
  other.stdin_fd_ = -1;
  other.status_ = 0;
}

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this == &other) return *this;
  close_stdin();
  pid_ = other.pid_;
  stdin_fd_ = other.stdin_fd_;
  status_ = other.status_;
  other.pid_ = -1;
  other.stdin_fd_ = -1;
  other.status_ = 0;
  return *this;
}

child_process::~child_process() { close_stdin(); }

void child_process::close_stdin() noexcept {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

std::optional<int> child_process::poll() {
  if (status_ || pid_ <= 0) return status_;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) status_ = status;
  if (r < 0 && errno == ECHILD) status_ = 0;  // reaped elsewhere; nothing more to learn
  return status_;
}

std::optional<int> child_process::wait_for(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!poll()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return status_;
}

void child_process::signal(int sig) const {
  if (!status_ && pid_ > 0) ::kill(pid_, sig);
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "was killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : std::string());
  }
  return "ended with wait status " + std::to_string(status);
}

bool exited_cleanly(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

std::string tail_lines(const std::string& path, int lines) {
  std::ifstream in(path);
  if (!in) return {};
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (static_cast<int>(last.size()) > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += l + "\n";
  return out;
}

std::string run_directory_path(const std::string& cluster_name, int port) {
  std::string base = "/tmp";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg && ::access(xdg, W_OK | X_OK) == 0) base = xdg;
  std::string name;
  for (char c : cluster_name) name += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return base + "/afd-" + name + "-" + std::to_string(port);
}

expected<std::string> make_run_directory(const std::string& cluster_name, int port) {
  const std::string dir = run_directory_path(cluster_name, port);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail(errc::io_error, "cannot create the run directory '", dir, "': ", std::strerror(errno));
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || ::access(dir.c_str(), W_OK) != 0)
    return fail(errc::io_error, "the run directory '", dir, "' is not a writable directory");
  return dir;
}

std::string self_executable() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "afd";
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace afd::launch
