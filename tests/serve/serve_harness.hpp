#pragma once
// What the `afd serve` tests share: a tiny model on DeepSeek-V3's tokenizer (from the npm package
// the text tests install), an `afd serve` process on a free port, curl, raw sockets, and the npm
// `openai` client installed once into the build tree.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/text/npm_oracle.hpp"

extern char** environ;

namespace afd::serve::testing {

namespace fs = std::filesystem;
using json = nlohmann::json;
using text::testing::npm_oracle;
using text::testing::read_text;
using text::testing::run_command;

// A scratch folder for this process, removed when it exits.
inline fs::path scratch() {
  struct folder {
    fs::path path = fs::temp_directory_path() / ("afd-serve-test-" + std::to_string(::getpid()));
    folder() {
      fs::remove_all(path);
      fs::create_directories(path);
    }
    ~folder() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const folder f;
  return f.path;
}

// Single quotes for sh.
inline std::string quoted(const std::string& s) {
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct cli_result {
  int code = -1;
  std::string out, err;
};

inline cli_result run_afd(const std::string& args) {
  static int n = 0;
  const fs::path err = scratch() / ("stderr-" + std::to_string(++n));
  auto [code, out] = run_command(quoted(AFD_EXECUTABLE) + " " + args + " 2>" + quoted(err.string()));
  return {code, out, read_text(err)};
}

inline std::string ids_arg(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

/// The tiny preset on DeepSeek-V3's tokenizer (made once per process).
inline fs::path model_dir() {
  static const fs::path dir = [] {
    const fs::path out = scratch() / "deepseek-tiny";
    const auto tokenizer = npm_oracle::deepseek_dir() / "tokenizer.json";
    const auto r = run_afd("make-model --preset tiny --out " + quoted(out.string()) + " --tokenizer " +
                       quoted(tokenizer.string()));
    EXPECT_EQ(r.code, 0) << r.err;
    return out;
  }();
  return dir;
}

/// An embedded 1a1f cluster over the loopback transport.
struct topology_limits {
  int queue = 256, max_batch = 16, max_context = 2048, max_new_tokens = 1024, kv_blocks = 2048;
  int coordinator_port = 7600;  ///< only `afd launch` listens on it
};
inline fs::path write_topology(const std::string& name, const topology_limits& l) {
  const fs::path path = scratch() / (name + ".yaml");
  std::ofstream(path) << "cluster: {name: " << name << "}\n"
                      << "model: {path: " << model_dir().string() << "}\n"
                      << "nodes:\n  - {name: local, host: 127.0.0.1}\n"
                      << "coordinator: {node: local, port: " << l.coordinator_port << "}\n"
                      << "transport: {kind: loopback}\n"
                      << "limits: {queue: " << l.queue << ", max_new_tokens: " << l.max_new_tokens
                      << ", max_context: " << l.max_context << "}\n"
                      << "attention_workers:\n  - {name: a0, node: local, device: cpu, kv_blocks: " << l.kv_blocks
                      << ", block_size: 16, max_batch: " << l.max_batch << "}\n"
                      << "ffn_workers:\n  - {name: f0, node: local, device: cpu}\n"
                      // `afd launch`: the loopback transport needs every worker in one process.
                      << "processes:\n  - {name: all, workers: [coordinator, a0, f0]}\n";
  return path;
}

/// `afd serve` as a child process on a free port.
class served {
 public:
  /// `afd serve --topology FILE --port 0 EXTRA...`
  served(const fs::path& topology, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--topology", topology.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    start(args);
  }
  /// `afd serve ARGS... --port 0`
  explicit served(std::vector<std::string> args) { start(args); }

 private:
  void start(const std::vector<std::string>& serve_args) {
    static int n = 0;
    log_ = scratch() / ("serve-" + std::to_string(++n) + ".log");
    std::vector<std::string> args = {AFD_EXECUTABLE, "serve", "--port", "0"};
    args.insert(args.end(), serve_args.begin(), serve_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      ADD_FAILURE() << "cannot start afd serve";
      return;
    }
    // "afd serve: listening on http://127.0.0.1:PORT ..."
    const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::smatch m;
      const std::string log = read_text(log_);
      if (std::regex_search(log, m, listening)) {
        port_ = std::stoi(m[1]);
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "afd serve exited:\n" << log;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "afd serve did not listen within 60 s:\n" << read_text(log_);
  }

 public:
  ~served() {
    if (pid_ > 0) stop(SIGKILL, std::chrono::seconds(10));
  }

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return read_text(log_); }
  pid_t pid() const { return pid_; }

  /// Sends `sig` and waits for the exit; the exit code, or -1 when it did not exit in time (killed then).
  int stop(int sig, std::chrono::seconds within) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    const auto deadline = std::chrono::steady_clock::now() + within;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

/// A command in the background (its output in `log`), killed when it goes out of scope.
class background {
 public:
  background(std::vector<std::string> args, const fs::path& log) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~background() { stop(SIGTERM); }
  /// Sends `sig`, waits up to 30 s, then kills.
  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    for (int i = 0; i < 1500 && ::waitpid(pid_, &status, WNOHANG) != pid_; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (::waitpid(pid_, &status, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }
  bool running() {
    int status = 0;
    return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
  }

 private:
  pid_t pid_ = -1;
};

/// An HTTP exchange through curl.
struct http_result {
  int status = 0;
  std::string headers, body;
  json doc() const { return json::parse(body, nullptr, false); }
};

inline http_result curl(const std::string& method, const std::string& url, const std::string& body = "",
                        const std::string& options = "") {
  static int n = 0;
  const std::string id = std::to_string(++n);
  const fs::path body_file = scratch() / ("body-" + id), head_file = scratch() / ("head-" + id),
                 out_file = scratch() / ("out-" + id);
  std::string cmd = "curl -sS -X " + method + " -D " + quoted(head_file.string()) + " -o " + quoted(out_file.string()) +
                    " -w '%{http_code}' " + options;
  if (!body.empty()) {
    std::ofstream(body_file, std::ios::binary) << body;
    cmd += " -H 'Content-Type: application/json' --data-binary @" + quoted(body_file.string());
  }
  auto [rc, code] = run_command(cmd + " " + quoted(url) + " 2>/dev/null");
  http_result r;
  r.status = std::atoi(code.c_str());
  r.headers = read_text(head_file);
  r.body = read_text(out_file);
  return r;
}

/// A header's value (case-insensitive name), or "".
inline std::string header_value(const std::string& headers, const std::string& name) {
  std::istringstream in(headers);
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon);
    if (k.size() != name.size() || !std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        }))
      continue;
    std::string v = line.substr(colon + 1);
    while (!v.empty() && (v.front() == ' ')) v.erase(0, 1);
    while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
    return v;
  }
  return "";
}

/// Sends raw bytes on a new connection and returns what comes back until the server closes (or `wait`).
inline std::string raw_exchange(int port, const std::string& bytes, std::chrono::milliseconds wait = std::chrono::seconds(5)) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "<connect failed>";
  }
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const auto n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

/// Prometheus samples: "name{labels}" -> value.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

inline std::map<std::string, double> scrape(const std::string& url) {
  const auto r = curl("GET", url + "/metrics");
  EXPECT_EQ(r.status, 200);
  std::map<std::string, double> out;
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

/// The reference engine's tokens for a prompt (single process, no cluster, no server).
inline std::vector<std::int32_t> reference_tokens(const std::vector<std::int32_t>& prompt, int max_tokens) {
  const auto r = run_afd("generate --model " + quoted(model_dir().string()) + " --prompt-ids " + ids_arg(prompt) +
                     " --max-new-tokens " + std::to_string(max_tokens) + " --json");
  EXPECT_EQ(r.code, 0) << r.err;
  return json::parse(r.out)["tokens"].get<std::vector<std::int32_t>>();
}

/// Text of ids as `afd tokenize` decodes it, special tokens skipped (the server's default).
inline std::string decoded(const std::vector<std::int32_t>& ids) {
  if (ids.empty()) return "";
  const auto r = run_afd("tokenize --model " + quoted(model_dir().string()) + " --no-special --ids " + ids_arg(ids));
  EXPECT_EQ(r.code, 0) << r.err;
  return json::parse(r.out)["text"].get<std::string>();
}

/// The npm `openai` client (tests/serve/npm), installed with `npm ci` once per package-lock.json.
inline std::string openai_client_dir() {
  static const std::string why = [] {
    const fs::path source = AFD_SERVE_NPM_SOURCE, dir = AFD_SERVE_NPM_DIR;
    fs::create_directories(dir);
    for (const char* f : {"package.json", "package-lock.json", "client.js"})
      fs::copy_file(source / f, dir / f, fs::copy_options::overwrite_existing);
    const std::string lock = read_text(source / "package-lock.json");
    if (read_text(dir / ".installed-lock") == lock && fs::exists(dir / "node_modules" / "openai")) return std::string();
    const auto [rc, out] = run_command("cd " + quoted(dir.string()) + " && npm ci --no-audit --no-fund 2>&1");
    if (rc != 0) return "npm ci failed in " + dir.string() + ":\n" + out;
    std::ofstream(dir / ".installed-lock", std::ios::binary) << lock;
    return std::string();
  }();
  EXPECT_TRUE(why.empty()) << why;
  return AFD_SERVE_NPM_DIR;
}

/// Runs `node client.js ARGS...` and parses its one JSON document.
inline json openai_client(const std::vector<std::string>& args) {
  std::string cmd = "node " + quoted(openai_client_dir() + "/client.js");
  for (const auto& a : args) cmd += " " + quoted(a);
  const auto [rc, out] = run_command(cmd + " 2>&1");
  EXPECT_EQ(rc, 0) << out;
  return json::parse(out, nullptr, false);
}

/// The SSE events of a stream body: the text after "data: " of each.
inline std::vector<std::string> sse_events(const std::string& body, std::string& problem) {
  std::vector<std::string> events;
  std::size_t at = 0;
  while (at < body.size()) {
    const auto end = body.find("\n\n", at);
    if (end == std::string::npos) {
      problem = "bytes after the last event: " + body.substr(at);
      break;
    }
    const std::string event = body.substr(at, end - at);
    if (event.rfind("data: ", 0) != 0 || event.find('\n') != std::string::npos) {
      problem = "not a single data line: " + event;
      break;
    }
    events.push_back(event.substr(6));
    at = end + 2;
  }
  return events;
}

}  // namespace afd::serve::testing

/// Skips when npm's registry cannot be reached (the only reason to skip); fails on other install errors.
#define AFD_REQUIRE_SERVE_MODEL() AFD_REQUIRE_NPM_ORACLE()
