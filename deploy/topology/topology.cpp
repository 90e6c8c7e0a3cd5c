// Parsing and validation of topology files. yaml-cpp is confined to this file: the rest of afd
// sees plain structs. Every check appends a diagnostic and goes on, so that one run reports every
// problem; nothing here throws past parse_text.
#include "deploy/topology/topology.hpp"
#include "runtime/faults/faults.hpp"

#include <pwd.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>
#include "transport/net_devices.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>

namespace afd::topology {

// ---------------------------------------------------------------------------------------------
// Small vocabulary shared with the other translation units.

std::string source_location::to_string() const {
  if (line <= 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string diagnostic::to_string() const { return where.to_string() + ": " + message; }

std::string device::to_string() const {
  return type == kind::cpu ? std::string("cpu") : "cuda:" + std::to_string(index);
}

std::optional<device> parse_device(std::string_view text) {
  if (text == "cpu") return device{};
  constexpr std::string_view prefix = "cuda:";
  if (text.substr(0, prefix.size()) != prefix) return std::nullopt;
  const std::string_view digits = text.substr(prefix.size());
  if (digits.empty() || digits.size() > 4) return std::nullopt;
  int index = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
  if (ec != std::errc{} || end != digits.data() + digits.size() || index < 0) return std::nullopt;
  return device{device::kind::cuda, index};
}

std::string_view to_string(transport_kind k) noexcept {
  return k == transport_kind::ucx ? "ucx" : "loopback";
}

std::string_view to_string(combine_mode m) noexcept {
  return m == combine_mode::deterministic ? "deterministic" : "throughput";
}

const node_spec* topology::find_node(std::string_view name) const {
  for (const auto& n : nodes)
    if (n.name == name) return &n;
  return nullptr;
}

int topology::ffn_worker_index(std::string_view name) const {
  for (std::size_t i = 0; i < ffn_workers.size(); ++i)
    if (ffn_workers[i].name == name) return static_cast<int>(i);
  return -1;
}

int topology::attention_worker_index(std::string_view name) const {
  for (std::size_t i = 0; i < attention_workers.size(); ++i)
    if (attention_workers[i].name == name) return static_cast<int>(i);
  return -1;
}

source_location topology::location_of(std::string_view path) const {
  auto it = locations.find(path);
  if (it != locations.end()) return it->second;
  return source_location{file, 0, 0};
}

ssh_target ssh_target_of(const node_spec& node) {
  ssh_target target;
  if (node.ssh) {
    target.user = node.ssh->user;
    target.host = node.ssh->host;
    if (node.ssh->port > 0) target.port = node.ssh->port;
    target.identity = node.ssh->identity;
  }
  if (target.host.empty()) target.host = node.host;
  if (target.user.empty()) {
    // The user running the launcher, as ssh itself would choose; root when it runs as root.
    if (const passwd* self = ::getpwuid(::geteuid()); self && self->pw_name && *self->pw_name)
      target.user = self->pw_name;
    else if (const char* user = std::getenv("USER"); user && *user)
      target.user = user;
    else
      target.user = ::geteuid() == 0 ? "root" : std::to_string(::geteuid());
  }
  return target;
}

std::string net_devices_of(const topology& t, std::string_view node) {
  const node_spec* n = t.find_node(node);
  if (n && !n->net_devices.empty()) return n->net_devices;
  return t.transport.net_devices;
}

std::string afd_path_of(const node_spec& node, const std::string& self) {
  return node.afd.empty() ? self : node.afd;
}

std::vector<coordinator_endpoint> coordinator_endpoints(const topology& t) {
  std::vector<coordinator_endpoint> out;
  auto add = [&](const std::string& node, int port) {
    coordinator_endpoint c;
    c.index = static_cast<int>(out.size());
    c.node = node;
    if (const node_spec* n = t.find_node(node)) c.host = n->host;
    c.port = port;
    out.push_back(std::move(c));
  };
  add(t.coordinator.node, t.coordinator.port);
  for (const auto& sb : t.coordinator.standby) add(sb.node, sb.port ? sb.port : t.coordinator.port);
  return out;
}

std::vector<const node_spec*> nodes_by_rank(const topology& t) {
  std::vector<const node_spec*> ranked;
  if (const node_spec* head = t.find_node(t.coordinator.node)) ranked.push_back(head);
  for (const auto& n : t.nodes)
    if (n.name != t.coordinator.node) ranked.push_back(&n);
  return ranked;
}

int topology::data_port(char role, int i) const {
  if (transport.base_port == 0) return 0;
  const int offset = role == 'a' ? i : static_cast<int>(attention_workers.size()) + i;
  return transport.base_port + offset;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers for messages.

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The closest candidate when it is close enough to be a plausible typo, else "".
std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const auto& c : candidates) {
    const std::size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  const std::size_t limit = std::max<std::size_t>(2, word.size() / 3);
  return best_distance <= limit ? best : std::string();
}

std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
  const std::string c = closest(word, candidates);
  return c.empty() ? std::string() : " (did you mean '" + c + "'?)";
}

std::string join(const std::vector<std::string>& items, std::string_view separator = ", ") {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += separator;
    out += s;
  }
  return out;
}

// What a node holds, for "expected X, got Y".
std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Sequence: return "a sequence";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: {
      std::string s = n.Scalar();
      if (s.size() > 40) s = s.substr(0, 40) + "...";
      return n.Tag() == "!" ? "the string \"" + s + "\"" : "'" + s + "'";
    }
  }
  return "something else";
}

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

// A host name or address as ssh and the others get it: letters, digits, '.', '-', '_', ':' and '%'
// (IPv6 and its zone). Never starts with '-': ssh would read it as an option.
bool valid_host(std::string_view s) {
  if (s.empty() || s.size() > 253 || s.front() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_' || c == ':' || c == '%';
  });
}

// A login name: 1-32 of letters, digits, '.', '_', '-', not starting with '-'.
bool valid_user(std::string_view s) {
  if (s.empty() || s.size() > 32 || s.front() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

// A UCX_NET_DEVICES list: comma-separated device names ("eth0", "mlx5_0:1", "all").
bool valid_device_list(std::string_view s) {
  if (s.empty()) return false;
  std::size_t start = 0;
  while (start <= s.size()) {
    const std::size_t comma = std::min(s.find(',', start), s.size());
    const std::string_view item = s.substr(start, comma - start);
    if (item.empty() || !std::all_of(item.begin(), item.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-' || c == ':' || c == '@';
        }))
      return false;
    start = comma + 1;
  }
  return true;
}

// A plain (unquoted) decimal integer.
std::optional<std::int64_t> plain_integer(const YAML::Node& n) {
  if (!n.IsScalar() || n.Tag() == "!") return std::nullopt;
  const std::string& s = n.Scalar();
  const char* first = s.data();
  if (!s.empty() && s[0] == '+') ++first;
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(first, s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || first == s.data() + s.size())
    return std::nullopt;
  return v;
}

// "A-B" (inclusive) or a single integer; both non-negative.
struct index_range {
  std::int64_t first = 0;
  std::int64_t last = 0;
};
std::optional<index_range> parse_index_range(const YAML::Node& n) {
  if (auto v = plain_integer(n)) {
    if (*v < 0) return std::nullopt;
    return index_range{*v, *v};
  }
  if (!n.IsScalar()) return std::nullopt;
  const std::string& s = n.Scalar();
  const auto dash = s.find('-');
  if (dash == std::string::npos || dash == 0) return std::nullopt;
  auto number = [](std::string_view t) -> std::optional<std::int64_t> {
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || ec != std::errc{} || end != t.data() + t.size() || v < 0) return std::nullopt;
    return v;
  };
  auto a = number(std::string_view(s).substr(0, dash));
  auto b = number(std::string_view(s).substr(dash + 1));
  if (!a || !b) return std::nullopt;
  return index_range{*a, *b};
}

std::string range_text(std::int64_t first, std::int64_t last) {
  return first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last);
}

// "line 12", or "line 12, column 9" when `here` is on the same line (flow mappings).
std::string position_text(const source_location& there, const source_location& here) {
  std::string s = "line " + std::to_string(there.line);
  if (there.line == here.line) s += ", column " + std::to_string(there.column);
  return s;
}

// ---------------------------------------------------------------------------------------------
// The reader: positions, diagnostics, typed getters.

// One key of a mapping, with where the key and the value are.
struct entry {
  std::string key;
  YAML::Node value;
  source_location key_at;
  source_location value_at;  // the key's position when the value is empty
  std::string path;          // "attention_workers[0].node"
};

using entries = std::vector<entry>;

const entry* find(const entries& es, std::string_view key) {
  for (const auto& e : es)
    if (e.key == key) return &e;
  return nullptr;
}

class reader {
 public:
  reader(std::string file, topology& t) : file_(std::move(file)), t_(t) {}

  diagnostics errors;

  source_location at(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    if (m.is_null() || m.line < 0) return source_location{file_, 0, 0};
    return source_location{file_, m.line + 1, m.column + 1};
  }

  void error(const source_location& where, std::string message) {
    errors.push_back(diagnostic{where, std::move(message)});
  }

  // The entries of mapping `node` (described as `what` in messages); unknown and repeated keys
  // are reported. nullopt when `node` is not a mapping (reported at `where`).
  std::optional<entries> mapping(const YAML::Node& node, const source_location& where,
                                 std::string_view what, const std::string& path,
                                 const std::vector<std::string>& allowed) {
    if (!node.IsMap()) {
      error(where, "expected a mapping for " + std::string(what) + " (keys " + join(allowed) +
                       "), got " + describe(node));
      return std::nullopt;
    }
    entries out;
    for (auto it = node.begin(); it != node.end(); ++it) {
      entry e;
      e.key_at = at(it->first);
      if (!it->first.IsScalar()) {
        error(e.key_at, "expected a key name in " + std::string(what) + ", got " + describe(it->first));
        continue;
      }
      e.key = it->first.Scalar();
      e.value = it->second;
      e.value_at = (e.value.IsNull() || at(e.value).line == 0) ? e.key_at : at(e.value);
      e.path = path.empty() ? e.key : path + "." + e.key;
      if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), e.key) == allowed.end()) {
        error(e.key_at, "unknown key '" + e.key + "' in " + std::string(what) +
                            did_you_mean(e.key, allowed) + "; expected one of: " + join(allowed));
        continue;
      }
      if (const entry* first = find(out, e.key)) {
        error(e.key_at, "key '" + e.key + "' repeated in " + std::string(what) + " (first at line " +
                            std::to_string(first->key_at.line) + ")");
        continue;
      }
      t_.locations[e.path] = e.value_at;
      out.push_back(std::move(e));
    }
    return out;
  }

  // A required key: reports its absence at `where` (the enclosing mapping).
  const entry* required(const entries& es, std::string_view key, const source_location& where,
                        std::string_view what) {
    const entry* e = find(es, key);
    if (!e) error(where, "missing required key '" + std::string(key) + "' in " + std::string(what));
    return e;
  }

  std::optional<std::string> string(const entry& e) {
    if (!e.value.IsScalar()) {
      error(e.value_at, "expected a string for '" + e.key + "', got " + describe(e.value));
      return std::nullopt;
    }
    return e.value.Scalar();
  }

  std::optional<std::string> name(const entry& e) {
    auto s = string(e);
    if (!s) return std::nullopt;
    if (!valid_name(*s)) {
      error(e.value_at, "expected a name of 1 to 64 letters, digits, '_', '-' or '.' for '" + e.key +
                            "', got " + describe(e.value));
      return std::nullopt;
    }
    return s;
  }

  std::optional<std::int64_t> integer(const entry& e, std::int64_t min, std::int64_t max) {
    auto v = plain_integer(e.value);
    if (!v) {
      error(e.value_at, "expected an integer for '" + e.key + "', got " + describe(e.value));
      return std::nullopt;
    }
    if (*v < min || *v > max) {
      std::string expected = max == std::numeric_limits<std::int64_t>::max()
                                 ? "at least " + std::to_string(min)
                                 : "in " + std::to_string(min) + ".." + std::to_string(max);
      error(e.value_at, std::string(e.key.find("port") != std::string::npos ? "port out of range: " : "") +
                            "'" + e.key + "' must be " + expected + ", got " + std::to_string(*v));
      return std::nullopt;
    }
    return v;
  }

  // Integer setter for an optional key with a default already in `target`.
  template <class Int>
  void optional_integer(const entries& es, std::string_view key, Int& target, std::int64_t min,
                        std::int64_t max = std::numeric_limits<Int>::max()) {
    if (const entry* e = find(es, key))
      if (auto v = integer(*e, min, max)) target = static_cast<Int>(*v);
  }

  // One of `names`; returns its index.
  std::optional<std::size_t> choice(const entry& e, const std::vector<std::string>& names) {
    if (!e.value.IsScalar()) {
      error(e.value_at, "expected one of " + join(names, " | ") + " for '" + e.key + "', got " +
                            describe(e.value));
      return std::nullopt;
    }
    const std::string& s = e.value.Scalar();
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i] == s) return i;
    error(e.value_at, "expected one of " + join(names, " | ") + " for '" + e.key + "', got '" + s +
                          "'" + did_you_mean(s, names));
    return std::nullopt;
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
  topology& t_;
};

// ---------------------------------------------------------------------------------------------
// Sections.

const std::vector<std::string> top_keys = {"cluster",  "model",  "nodes",
                                           "coordinator", "transport", "pipeline",
                                           "limits",   "attention_workers", "ffn_workers",
                                           "processes", "placement", "faults"};

struct parser {
  reader& r;
  topology& t;
  bool combine_known = true;  // false when model.combine_mode could not be read

  void cluster(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'cluster'", e.path, {"name"});
    if (!es) return;
    if (const entry* n = find(*es, "name"))
      if (auto s = r.name(*n)) t.cluster_name = *s;
  }

  void model(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'model'", e.path,
                        {"path", "kv_dtype", "dispatch_dtype", "combine_dtype", "combine_mode"});
    if (!es) {
      combine_known = false;
      return;
    }
    if (const entry* p = r.required(*es, "path", e.value_at, "'model'")) {
      if (auto s = r.string(*p)) {
        if (s->empty()) {
          r.error(p->value_at, "expected a checkpoint directory for 'path', got an empty string");
        } else {
          t.model.path_as_written = *s;
          std::filesystem::path path(*s);
          if (path.is_relative()) path = std::filesystem::path(t.directory) / path;
          // Absolute, so that processes started elsewhere find the same directory.
          std::error_code ec;
          if (auto absolute = std::filesystem::absolute(path, ec); !ec) path = absolute;
          t.model.path = path.lexically_normal().string();
        }
      }
    }
    const std::vector<std::string> dtypes = {"f32", "bf16", "fp8"};
    const dtype values[] = {dtype::f32, dtype::bf16, dtype::f8_e4m3};
    if (const entry* d = find(*es, "kv_dtype"))
      if (auto i = r.choice(*d, dtypes)) t.model.kv_dtype = values[*i];
    if (const entry* d = find(*es, "dispatch_dtype"))
      if (auto i = r.choice(*d, dtypes)) t.model.dispatch_dtype = values[*i];
    if (const entry* d = find(*es, "combine_dtype"))
      if (auto i = r.choice(*d, {"f32", "bf16"})) t.model.combine_dtype = values[*i];
    if (const entry* d = find(*es, "combine_mode")) {
      if (auto i = r.choice(*d, {"deterministic", "throughput"}))
        t.model.combine = *i == 0 ? combine_mode::deterministic : combine_mode::throughput;
      else
        combine_known = false;
    }
  }

  // The items of a sequence, each as an entry named "what[i]".
  std::optional<std::vector<entry>> sequence(const entry& e, std::string_view what) {
    if (!e.value.IsSequence()) {
      error_expected_sequence(e, what);
      return std::nullopt;
    }
    std::vector<entry> items;
    std::size_t i = 0;
    for (const auto& item : e.value) {
      entry it;
      it.key = e.key + "[" + std::to_string(i) + "]";
      it.path = e.path + "[" + std::to_string(i) + "]";
      it.value = static_cast<const YAML::Node&>(item);
      it.key_at = r.at(item).line ? r.at(item) : e.value_at;
      it.value_at = it.key_at;
      items.push_back(std::move(it));
      ++i;
    }
    return items;
  }

  void error_expected_sequence(const entry& e, std::string_view what) {
    r.error(e.value_at, "expected a sequence of " + std::string(what) + " for '" + e.key + "', got " +
                            describe(e.value));
  }

  void nodes(const entry& e) {
    auto items = sequence(e, "nodes ({name, host})");
    if (!items) return;
    if (items->empty()) r.error(e.value_at, "'nodes' is empty: expected at least one node {name, host}");
    for (const auto& item : *items) {
      auto es = r.mapping(item.value, item.value_at, "a node", item.path,
                          {"name", "host", "ssh", "net_devices", "afd"});
      if (!es) continue;
      node_spec n;
      n.where = item.value_at;
      bool ok = true;
      if (const entry* k = r.required(*es, "name", item.value_at, "a node")) {
        if (auto s = r.name(*k)) {
          if (const node_spec* other = t.find_node(*s)) {
            r.error(k->value_at, "duplicate node name '" + *s + "' (first declared at line " +
                                     std::to_string(other->where.line) + ")");
            ok = false;
          }
          n.name = *s;
        } else {
          ok = false;
        }
      } else {
        ok = false;
      }
      if (const entry* k = r.required(*es, "host", item.value_at, "a node")) {
        if (auto s = r.string(*k)) {
          if (s->empty())
            r.error(k->value_at, "expected a host name or address for 'host', got an empty string");
          else if (!valid_host(*s))
            r.error(k->value_at, "expected a host name or address (letters, digits, '.', '-', '_', ':'; not "
                                 "starting with '-') for 'host', got " + describe(k->value));
          n.host = *s;
        }
      }
      if (const entry* k = find(*es, "ssh")) n.ssh = ssh(*k);
      if (const entry* k = find(*es, "net_devices")) {
        if (auto s = r.string(*k)) {
          if (valid_device_list(*s))
            n.net_devices = *s;
          else
            r.error(k->value_at, "expected a comma-separated list of network devices (e.g. \"eth0\" or "
                                 "\"mlx5_0:1,eth1\") for 'net_devices', got " + describe(k->value));
        }
      }
      if (const entry* k = find(*es, "afd")) {
        if (auto s = r.string(*k)) {
          const bool control = std::any_of(s->begin(), s->end(), [](char c) {
            return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
          });
          if (s->empty() || s->front() != '/' || control)
            r.error(k->value_at, "expected the absolute path of the afd executable on node '" + n.name +
                                     "' for 'afd' (e.g. /opt/afd/bin/afd), got " + describe(k->value));
          else
            n.afd = std::filesystem::path(*s).lexically_normal().string();
        }
      }
      if (ok) t.nodes.push_back(std::move(n));
    }
  }

  // Where, inside the scalar of `e`, character `offset` of its text is (plain or quoted scalars on
  // one line), so that an error names the column of the bad part.
  source_location inside(const entry& e, std::size_t offset) const {
    source_location at = e.value_at;
    if (at.line > 0) at.column += static_cast<int>(offset) + (e.value.Tag() == "!" ? 1 : 0);
    return at;
  }

  // A node's `ssh`: "[user@]host[:port]" ("[v6]:port" for IPv6), or {user, host, port, identity}.
  std::optional<ssh_spec> ssh(const entry& e) {
    ssh_spec spec;
    spec.where = e.value_at;
    const std::string expected = "expected 'user@host[:port]' or a mapping {user, host, port, identity} for 'ssh'";
    if (e.value.IsScalar()) {
      const std::string& text = e.value.Scalar();
      bool ok = true;
      std::string_view rest = text;
      std::size_t host_at = 0;
      if (const auto at = rest.find('@'); at != std::string_view::npos) {
        spec.user = std::string(rest.substr(0, at));
        if (spec.user.empty()) {
          r.error(inside(e, 0), "empty user before '@' in 'ssh'; " + expected + ", e.g. root@10.0.0.2");
          ok = false;
        } else if (!valid_user(spec.user)) {
          r.error(inside(e, 0), "expected a user name (letters, digits, '.', '_', '-'; not starting with '-') "
                                "before '@' in 'ssh', got '" + spec.user + "'");
          ok = false;
        }
        rest.remove_prefix(at + 1);
        host_at = at + 1;
      }
      std::string_view port_text;
      std::size_t port_at = 0;
      if (!rest.empty() && rest.front() == '[') {  // [IPv6]:port
        const auto close = rest.find(']');
        if (close == std::string_view::npos) {
          r.error(inside(e, host_at), "missing ']' after the IPv6 address in 'ssh', got " + describe(e.value));
          return std::nullopt;
        }
        spec.host = std::string(rest.substr(1, close - 1));
        const std::string_view after = rest.substr(close + 1);
        if (!after.empty()) {
          if (after.front() != ':') {
            r.error(inside(e, host_at + close + 1), "expected ':port' after ']' in 'ssh', got '" +
                                                        std::string(after) + "'");
            return std::nullopt;
          }
          port_text = after.substr(1);
          port_at = host_at + close + 2;
        }
        host_at += 1;
      } else if (const auto colon = rest.rfind(':'); colon != std::string_view::npos &&
                                                     rest.find(':') == colon) {  // one ':' is a port
        spec.host = std::string(rest.substr(0, colon));
        port_text = rest.substr(colon + 1);
        port_at = host_at + colon + 1;
      } else {
        spec.host = std::string(rest);  // a bare IPv6 address has several ':' and no port
      }
      if (spec.host.empty()) {
        r.error(inside(e, host_at), "empty host in 'ssh'; " + expected + ", e.g. root@10.0.0.2:22");
        ok = false;
      } else if (!valid_host(spec.host)) {
        r.error(inside(e, host_at), "expected a host name or address (letters, digits, '.', '-', '_', ':'; not "
                                    "starting with '-') in 'ssh', got '" + spec.host + "'");
        ok = false;
      }
      if (port_at > 0) {
        std::int64_t port = -1;
        auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
        if (port_text.empty() || ec != std::errc{} || end != port_text.data() + port_text.size()) {
          r.error(inside(e, port_at), "expected a port number after ':' in 'ssh', got '" + std::string(port_text) + "'");
          ok = false;
        } else if (port < 1 || port > 65535) {
          r.error(inside(e, port_at), "port out of range: the ssh port must be in 1..65535, got " +
                                          std::string(port_text));
          ok = false;
        } else {
          spec.port = static_cast<int>(port);
        }
      }
      if (!ok) return std::nullopt;
      return spec;
    }
    if (!e.value.IsMap()) {
      r.error(e.value_at, expected + ", got " + describe(e.value));
      return std::nullopt;
    }
    auto es = r.mapping(e.value, e.value_at, "'ssh'", e.path, {"user", "host", "port", "identity"});
    if (!es) return std::nullopt;
    bool ok = true;
    if (const entry* k = find(*es, "user")) {
      if (auto s = r.string(*k)) {
        if (s->empty()) {
          r.error(k->value_at, "expected a user name for 'user' of 'ssh', got an empty string");
          ok = false;
        } else if (!valid_user(*s)) {
          r.error(k->value_at, "expected a user name (letters, digits, '.', '_', '-'; not starting with '-') "
                               "for 'user' of 'ssh', got " + describe(k->value));
          ok = false;
        } else {
          spec.user = *s;
        }
      } else {
        ok = false;
      }
    }
    if (const entry* k = find(*es, "host")) {
      if (auto s = r.string(*k)) {
        if (!valid_host(*s)) {
          r.error(k->value_at, "expected a host name or address (letters, digits, '.', '-', '_', ':'; not "
                               "starting with '-') for 'host' of 'ssh', got " + describe(k->value));
          ok = false;
        } else {
          spec.host = *s;
        }
      } else {
        ok = false;
      }
    }
    if (const entry* k = find(*es, "port")) {
      if (auto v = r.integer(*k, 1, 65535)) spec.port = static_cast<int>(*v);
      else ok = false;
    }
    if (const entry* k = find(*es, "identity")) {
      if (auto s = r.string(*k)) {
        if (s->empty()) {
          r.error(k->value_at, "expected the path of a private key file for 'identity', got an empty string");
          ok = false;
        } else {
          spec.identity_as_written = *s;
          std::filesystem::path path(*s);
          if (s->rfind("~/", 0) == 0) {
            // The launcher's home: the file is read on this machine.
            const char* home = std::getenv("HOME");
            path = std::filesystem::path(home ? home : "/") / s->substr(2);
          } else if (path.is_relative()) {
            path = std::filesystem::path(t.directory) / path;
          }
          std::error_code ec;
          if (auto absolute = std::filesystem::absolute(path, ec); !ec) path = absolute;
          spec.identity = path.lexically_normal().string();
        }
      } else {
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return spec;
  }

  void coordinator(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'coordinator'", e.path, {"node", "port", "credentials", "standby"});
    if (!es) return;
    t.coordinator.where = e.value_at;
    if (const entry* n = r.required(*es, "node", e.value_at, "'coordinator'"))
      if (auto s = r.name(*n)) t.coordinator.node = *s;
    r.optional_integer(*es, "port", t.coordinator.port, 1, 65535);
    if (const entry* k = find(*es, "standby"))
      if (auto items = sequence(*k, "standby coordinators (a node name, or {node, port})"))
        for (const auto& item : *items) {
          standby_spec sb;
          sb.where = item.value_at;
          t.locations[item.path] = item.value_at;
          if (item.value.IsMap()) {
            auto ss = r.mapping(item.value, item.value_at, "a standby coordinator", item.path, {"node", "port"});
            if (!ss) continue;
            if (const entry* n = r.required(*ss, "node", item.value_at, "a standby coordinator"))
              if (auto s = r.name(*n)) sb.node = *s;
            r.optional_integer(*ss, "port", sb.port, 1, 65535);
          } else if (auto s = r.name(item)) {
            sb.node = *s;
          } else {
            continue;
          }
          t.coordinator.standby.push_back(std::move(sb));
        }
    if (const entry* k = find(*es, "credentials")) {
      if (auto s = r.string(*k)) {
        if (s->empty()) {
          r.error(k->value_at, "expected the directory of the cluster's TLS files for 'credentials', got an empty string");
        } else {
          std::filesystem::path path(*s);
          if (path.is_relative()) path = std::filesystem::path(t.directory) / path;
          std::error_code ec;
          if (auto absolute = std::filesystem::absolute(path, ec); !ec) path = absolute;
          t.coordinator.credentials = path.lexically_normal().string();
        }
      }
    }
  }

  void transport(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'transport'", e.path,
                        {"kind", "tls", "net_devices", "error_mode", "base_port"});
    if (!es) return;
    if (const entry* k = find(*es, "kind"))
      if (auto i = r.choice(*k, {"ucx", "loopback"}))
        t.transport.kind = *i == 0 ? transport_kind::ucx : transport_kind::loopback;
    if (const entry* k = find(*es, "tls")) {
      if (auto s = r.string(*k)) {
        t.transport.tls = *s;
        // UCX transport names do not depend on the host: checked here, with the line.
        if (auto ok = transport::validate_tls(*s, "tls"); !ok) r.error(k->value_at, ok.err().message());
      }
    }
    if (const entry* k = find(*es, "net_devices"))
      if (auto s = r.string(*k)) t.transport.net_devices = *s;
    if (const entry* k = find(*es, "error_mode")) {
      static const std::vector<std::string> modes = {"auto", "peer", "minimal"};
      if (auto i = r.choice(*k, modes)) t.transport.error_mode = modes[*i];
    }
    r.optional_integer(*es, "base_port", t.transport.base_port, 0, 65535);
  }

  void pipeline(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'pipeline'", e.path,
                        {"micro_batches", "prefill_chunk", "step_deadline_ms"});
    if (!es) return;
    r.optional_integer(*es, "micro_batches", t.pipeline.micro_batches, 1, 64);
    r.optional_integer(*es, "prefill_chunk", t.pipeline.prefill_chunk, 1, 1 << 20);
    r.optional_integer(*es, "step_deadline_ms", t.pipeline.step_deadline_ms, 1, 3600 * 1000);
  }

  void limits(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'limits'", e.path,
                        {"queue", "max_new_tokens", "max_context"});
    if (!es) return;
    r.optional_integer(*es, "queue", t.limits.queue, 1, 1 << 24);
    r.optional_integer(*es, "max_new_tokens", t.limits.max_new_tokens, 1, 1 << 24);
    r.optional_integer(*es, "max_context", t.limits.max_context, 0, 1 << 24);
    if (t.limits.max_context > 0 && t.limits.max_new_tokens > t.limits.max_context) {
      // Point at the side the file wrote: a default has no line of its own.
      if (t.locations.count("limits.max_new_tokens"))
        r.error(t.location_of("limits.max_new_tokens"),
                "'max_new_tokens' (" + std::to_string(t.limits.max_new_tokens) +
                    ") must not exceed 'max_context' (" + std::to_string(t.limits.max_context) + ")");
      else
        r.error(t.location_of("limits.max_context"),
                "'max_context' (" + std::to_string(t.limits.max_context) +
                    ") is below the default 'max_new_tokens' (" + std::to_string(t.limits.max_new_tokens) +
                    "); set limits.max_new_tokens to at most " + std::to_string(t.limits.max_context));
    }
  }

  // name, node, device of a worker; false when the name is unusable.
  bool worker_common(const entries& es, const entry& item, std::string_view what, std::string& name,
                     std::string& node, device& dev) {
    bool ok = true;
    if (const entry* k = r.required(es, "name", item.value_at, what)) {
      if (auto s = r.name(*k)) name = *s; else ok = false;
    } else {
      ok = false;
    }
    if (const entry* k = r.required(es, "node", item.value_at, what))
      if (auto s = r.name(*k)) node = *s;
    if (const entry* k = find(es, "device")) {
      if (auto s = r.string(*k)) {
        if (auto d = parse_device(*s))
          dev = *d;
        else
          r.error(k->value_at, "expected a device 'cpu' or 'cuda:N' (N a GPU index) for 'device', got " +
                                   describe(k->value));
      }
    }
    return ok;
  }

  void attention_workers(const entry& e) {
    auto items = sequence(e, "attention workers");
    if (!items) return;
    for (const auto& item : *items) {
      auto es = r.mapping(item.value, item.value_at, "an attention worker", item.path,
                          {"name", "node", "device", "kv_blocks", "block_size", "max_batch"});
      if (!es) continue;
      attention_worker_spec w;
      w.where = item.value_at;
      const bool ok = worker_common(*es, item, "an attention worker", w.name, w.node, w.dev);
      r.optional_integer(*es, "kv_blocks", w.kv_blocks, 1, std::int64_t{1} << 40);
      r.optional_integer(*es, "block_size", w.block_size, 1, 1 << 16);
      r.optional_integer(*es, "max_batch", w.max_batch, 1, 1 << 20);
      if (ok) t.attention_workers.push_back(std::move(w));
    }
  }

  void ffn_workers(const entry& e) {
    auto items = sequence(e, "FFN workers");
    if (!items) return;
    for (const auto& item : *items) {
      auto es = r.mapping(item.value, item.value_at, "an FFN worker", item.path,
                          {"name", "node", "device", "max_tokens"});
      if (!es) continue;
      ffn_worker_spec w;
      w.where = item.value_at;
      const bool ok = worker_common(*es, item, "an FFN worker", w.name, w.node, w.dev);
      r.optional_integer(*es, "max_tokens", w.max_tokens, 0, 1 << 24);
      if (ok) t.ffn_workers.push_back(std::move(w));
    }
  }

  void processes(const entry& e) {
    auto items = sequence(e, "processes ({name, workers})");
    if (!items) return;
    for (const auto& item : *items) {
      auto es = r.mapping(item.value, item.value_at, "a process", item.path, {"name", "workers"});
      if (!es) continue;
      process_spec p;
      p.where = item.value_at;
      if (const entry* k = r.required(*es, "name", item.value_at, "a process"))
        if (auto s = r.name(*k)) p.name = *s;
      if (const entry* k = r.required(*es, "workers", item.value_at, "a process")) {
        if (auto members = sequence(*k, "worker names")) {
          if (members->empty())
            r.error(k->value_at, "'workers' of a process is empty: expected at least one worker name");
          for (const auto& m : *members)
            if (auto s = r.name(m)) {
              p.members.push_back(*s);
              t.locations[m.path] = m.value_at;
            }
        }
      }
      t.processes.push_back(std::move(p));
    }
  }

  // Fault rules armed when the cluster is ready: {seed, rules: ["KIND key=value ...", ...]}.
  // Each rule is checked as faults::parse_rule reads it, and the workers it names must exist.
  void faults(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'faults'", e.path, {"seed", "rules"});
    if (!es) return;
    if (const entry* k = find(*es, "seed"))
      if (auto v = r.integer(*k, 0, std::numeric_limits<std::int64_t>::max()))
        t.faults.seed = static_cast<std::uint64_t>(*v);
    const entry* k = r.required(*es, "rules", e.value_at, "'faults'");
    if (!k) return;
    auto items = sequence(*k, "fault rules (\"KIND key=value ...\", docs/faults.md)");
    if (!items) return;
    for (const auto& item : *items) {
      auto text = r.string(item);
      if (!text) continue;
      if (auto c = check_fault_rule(t, *text); !c) {
        r.error(item.value_at, c.err().message());
        continue;
      }
      t.faults.rules.push_back(*text);
      t.locations[item.path] = item.value_at;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Placement.

  std::vector<std::string> ffn_names() const {
    std::vector<std::string> names;
    for (const auto& w : t.ffn_workers) names.push_back(w.name);
    return names;
  }

  // Reports a worker key of an explicit placement that is not an FFN worker; true when it is one.
  bool check_ffn_worker(const std::string& name, const source_location& at) {
    if (t.ffn_worker_index(name) >= 0) return true;
    if (t.attention_worker_index(name) >= 0) {
      r.error(at, "'" + name + "' is an attention worker; expected an FFN worker (" +
                      join(ffn_names()) + ")");
    } else {
      r.error(at, "unknown FFN worker '" + name + "'" + did_you_mean(name, ffn_names()) +
                      "; expected one of: " + join(ffn_names()));
    }
    return false;
  }

  std::optional<expert_rule> experts(const entry& e, const std::string& scope) {
    expert_rule rule;
    rule.where = e.value_at;
    const std::string expected =
        "expected contiguous | round_robin, or a mapping from FFN worker to expert indices and "
        "ranges (e.g. {f0: [0-15, 20]})";
    if (e.value.IsScalar()) {
      const std::string& s = e.value.Scalar();
      if (s == "contiguous") return rule;
      if (s == "round_robin") {
        rule.how = expert_rule::policy::round_robin;
        return rule;
      }
      r.error(e.value_at, expected + " for '" + e.key + "', got '" + s + "'" +
                              did_you_mean(s, {"contiguous", "round_robin"}));
      return std::nullopt;
    }
    if (!e.value.IsMap()) {
      r.error(e.value_at, expected + " for '" + e.key + "', got " + describe(e.value));
      return std::nullopt;
    }
    rule.how = expert_rule::policy::explicit_owners;
    auto es = r.mapping(e.value, e.value_at, "'" + e.key + "'", e.path, {});
    if (!es) return std::nullopt;
    bool ok = true;
    for (const auto& owner_entry : *es) {
      if (!check_ffn_worker(owner_entry.key, owner_entry.key_at)) {
        ok = false;
        continue;
      }
      expert_rule::owner owner;
      owner.worker = owner_entry.key;
      owner.where = owner_entry.key_at;
      std::vector<YAML::Node> items;
      if (owner_entry.value.IsSequence()) {
        for (const auto& item : owner_entry.value) items.push_back(item);
      } else if (owner_entry.value.IsScalar()) {
        items.push_back(owner_entry.value);
      } else if (!owner_entry.value.IsNull()) {
        r.error(owner_entry.value_at, "expected a list of expert indices and ranges (e.g. [0-15, 20]) for '" +
                                          owner_entry.key + "', got " + describe(owner_entry.value));
        ok = false;
        continue;
      }
      for (const auto& item : items) {
        const source_location where = r.at(item).line ? r.at(item) : owner_entry.value_at;
        auto range = parse_index_range(item);
        if (!range) {
          r.error(where, "expected an expert index or an inclusive range 'A-B' of non-negative integers, got " +
                             describe(item));
          ok = false;
          continue;
        }
        if (range->first > range->last) {
          r.error(where, "expert range '" + item.Scalar() + "' is empty: expected first <= last");
          ok = false;
          continue;
        }
        owner.experts.push_back(expert_range{range->first, range->last, where});
      }
      rule.owners.push_back(std::move(owner));
    }
    // Ownership is the same in every layer the rule covers, so an overlap is found here, without
    // the model: sort the ranges and compare neighbours.
    struct owned {
      std::int64_t first, last;
      const std::string* worker;
      source_location where;
    };
    std::vector<owned> all;
    for (const auto& o : rule.owners)
      for (const auto& x : o.experts) all.push_back({x.first, x.last, &o.worker, x.where});
    std::stable_sort(all.begin(), all.end(), [](const owned& a, const owned& b) { return a.first < b.first; });
    std::int64_t reach = -1;
    const owned* reacher = nullptr;
    for (const auto& x : all) {
      if (reacher && x.first <= reach) {
        const std::int64_t last = std::min(reach, x.last);
        const bool same = *reacher->worker == *x.worker;
        // Reported where the second claim is written, naming the first.
        const bool x_later = std::tie(x.where.line, x.where.column) >=
                             std::tie(reacher->where.line, reacher->where.column);
        const owned& earlier = x_later ? *reacher : x;
        const owned& later = x_later ? x : *reacher;
        r.error(later.where, std::string(x.first == last ? "expert " : "experts ") + range_text(x.first, last) +
                                 (x.first == last ? " is" : " are") + " owned twice in " + scope + ": " +
                                 (same ? "listed twice for " + *x.worker
                                       : "by " + *earlier.worker + " (" + position_text(earlier.where, later.where) +
                                             ") and by " + *later.worker) +
                                 "; each expert must have exactly one owner");
        ok = false;
      }
      if (x.last > reach) {
        reach = x.last;
        reacher = &x;
      }
    }
    if (!ok) return std::nullopt;
    return rule;
  }

  std::optional<unit_rule> unit(const entry& e, std::string_view unit_name, const std::string& scope) {
    unit_rule rule;
    rule.where = e.value_at;
    const std::string expected =
        "expected round_robin | sliced, or a mapping from FFN worker to 'whole' or {begin, end} "
        "column slices";
    const std::string not_whole =
        std::string(unit_name) + " sliced across workers is allowed only with model.combine_mode: "
        "throughput (deterministic mode computes every unit whole on one FFN worker)";
    if (e.value.IsScalar()) {
      const std::string& s = e.value.Scalar();
      if (s == "round_robin") return rule;
      if (s == "sliced") {
        rule.how = unit_rule::policy::sliced;
        if (combine_known && t.model.combine == combine_mode::deterministic) {
          r.error(e.value_at, not_whole);
          return std::nullopt;
        }
        return rule;
      }
      r.error(e.value_at, expected + " for '" + e.key + "', got '" + s + "'" +
                              did_you_mean(s, {"round_robin", "sliced"}));
      return std::nullopt;
    }
    if (!e.value.IsMap()) {
      r.error(e.value_at, expected + " for '" + e.key + "', got " + describe(e.value));
      return std::nullopt;
    }
    rule.how = unit_rule::policy::explicit_owners;
    auto es = r.mapping(e.value, e.value_at, "'" + e.key + "'", e.path, {});
    if (!es) return std::nullopt;
    bool ok = true;
    for (const auto& share_entry : *es) {
      if (!check_ffn_worker(share_entry.key, share_entry.key_at)) {
        ok = false;
        continue;
      }
      unit_rule::share share;
      share.worker = share_entry.key;
      share.where = share_entry.value_at;
      if (share_entry.value.IsScalar() && share_entry.value.Scalar() == "whole") {
        share.whole = true;
      } else if (share_entry.value.IsMap()) {
        auto bounds = r.mapping(share_entry.value, share_entry.value_at, "a column slice",
                                share_entry.path, {"begin", "end"});
        if (!bounds) {
          ok = false;
          continue;
        }
        share.whole = false;
        const entry* b = r.required(*bounds, "begin", share_entry.value_at, "a column slice");
        const entry* en = r.required(*bounds, "end", share_entry.value_at, "a column slice");
        std::int64_t begin = -1, end = -1;
        if (b)
          if (auto v = r.integer(*b, 0, std::int64_t{1} << 40)) begin = *v;
        if (en)
          if (auto v = r.integer(*en, 1, std::int64_t{1} << 40)) end = *v;
        if (begin < 0 || end < 0) {
          ok = false;
          continue;
        }
        if (begin >= end) {
          r.error(share_entry.value_at, "column slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                                            ") of " + share.worker + " is empty: expected begin < end");
          ok = false;
          continue;
        }
        share.begin = begin;
        share.end = end;
      } else {
        r.error(share_entry.value_at, "expected 'whole' or a column slice {begin: B, end: E} for '" +
                                          share_entry.key + "', got " + describe(share_entry.value));
        ok = false;
        continue;
      }
      rule.shares.push_back(std::move(share));
    }
    if (!ok) return std::nullopt;
    // Owned twice: two `whole`, a `whole` beside slices, or overlapping slices.
    const unit_rule::share* whole = nullptr;
    std::vector<const unit_rule::share*> slices;
    for (const auto& s : rule.shares) {
      if (s.whole) {
        if (whole) {
          r.error(s.where, std::string(unit_name) + " of " + scope + " is owned twice: whole by " + whole->worker +
                               " (" + position_text(whole->where, s.where) + ") and whole by " + s.worker +
                               "; expected exactly one owner");
          ok = false;
        } else {
          whole = &s;
        }
      } else {
        slices.push_back(&s);
      }
    }
    if (whole && !slices.empty()) {
      r.error(slices.front()->where, std::string(unit_name) + " of " + scope + " is owned twice: whole by " +
                                         whole->worker + " (" + position_text(whole->where, slices.front()->where) +
                                         ") and in part by " + slices.front()->worker +
                                         "; expected one 'whole' owner or slices only");
      ok = false;
    }
    std::stable_sort(slices.begin(), slices.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < slices.size(); ++i) {
      if (slices[i]->begin < slices[i - 1]->end) {
        r.error(slices[i]->where, "columns [" + std::to_string(slices[i]->begin) + ", " +
                                      std::to_string(std::min(slices[i]->end, slices[i - 1]->end)) + ") of the " +
                                      std::string(unit_name) + " of " + scope + " are owned twice: by " +
                                      slices[i - 1]->worker + " (" +
                                      position_text(slices[i - 1]->where, slices[i]->where) + ") and by " +
                                      slices[i]->worker);
        ok = false;
      }
    }
    if (rule.shares.empty()) {
      r.error(e.value_at, "'" + e.key + "' names no FFN worker: expected one 'whole' owner or column slices");
      ok = false;
    }
    if (ok && slices.size() > 1 && combine_known && t.model.combine == combine_mode::deterministic) {
      r.error(e.value_at, not_whole);
      ok = false;
    }
    if (!ok) return std::nullopt;
    return rule;
  }

  void placement(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'placement'", e.path, {"experts", "shared", "dense", "layers"});
    if (!es) return;
    auto& p = t.placement;
    if (const entry* k = find(*es, "experts"))
      if (auto rule = experts(*k, "every MoE layer")) p.experts = std::move(*rule);
    if (const entry* k = find(*es, "shared"))
      if (auto rule = unit(*k, "shared expert", "every MoE layer")) p.shared = std::move(*rule);
    if (const entry* k = find(*es, "dense"))
      if (auto rule = unit(*k, "dense MLP", "every dense layer")) p.dense = std::move(*rule);
    if (const entry* k = find(*es, "layers")) layers(*k);
  }

  void layers(const entry& e) {
    auto es = r.mapping(e.value, e.value_at, "'layers' (layer index or 'A-B' range -> rules)", e.path, {});
    if (!es) return;
    for (const auto& le : *es) {
      YAML::Node key_node = YAML::Node(le.key);
      auto range = parse_index_range(key_node);
      if (!range || range->first > range->last) {
        r.error(le.key_at, "expected a layer index or an inclusive range 'A-B' of layers as a key of 'layers', got '" +
                               le.key + "'");
        continue;
      }
      layer_rule rule;
      rule.first_layer = range->first;
      rule.last_layer = range->last;
      rule.where = le.key_at;
      bool overlap = false;
      for (const auto& other : t.placement.layers) {
        if (rule.first_layer <= other.last_layer && other.first_layer <= rule.last_layer) {
          const bool one = rule.first_layer == rule.last_layer;
          r.error(le.key_at, (one ? "layer " : "layers ") + range_text(rule.first_layer, rule.last_layer) +
                                 (one ? " overlaps" : " overlap") + " the override of layers " +
                                 range_text(other.first_layer, other.last_layer) + " (line " +
                                 std::to_string(other.where.line) + "); expected each layer overridden once");
          overlap = true;
          break;
        }
      }
      auto rules = r.mapping(le.value, le.value_at, "the override of layers " + le.key, le.path,
                             {"experts", "shared", "dense"});
      if (!rules || overlap) continue;
      const std::string scope = "layers " + range_text(rule.first_layer, rule.last_layer);
      if (const entry* k = find(*rules, "experts")) rule.experts = experts(*k, scope);
      if (const entry* k = find(*rules, "shared")) rule.shared = unit(*k, "shared expert", scope);
      if (const entry* k = find(*rules, "dense")) rule.dense = unit(*k, "dense MLP", scope);
      t.placement.layers.push_back(std::move(rule));
    }
  }

  // ------------------------------------------------------------------------------------------
  // Checks across sections.

  void cross_checks(const entries& top, const source_location& top_at) {
    // Worker names are unique across roles; "coordinator" names the coordinator in processes.
    std::map<std::string, source_location> seen;
    auto check_name = [&](const std::string& name, const source_location& where, const std::string& path) {
      const source_location at = t.location_of(path + ".name");
      if (name == "coordinator") {
        r.error(at.line ? at : where, "worker name 'coordinator' is reserved; expected another name");
        return;
      }
      auto [it, inserted] = seen.emplace(name, at);
      if (!inserted)
        r.error(at.line ? at : where, "duplicate worker name '" + name + "' (first declared at line " +
                                          std::to_string(it->second.line) + ")");
    };
    for (std::size_t i = 0; i < t.attention_workers.size(); ++i)
      check_name(t.attention_workers[i].name, t.attention_workers[i].where,
                 "attention_workers[" + std::to_string(i) + "]");
    for (std::size_t i = 0; i < t.ffn_workers.size(); ++i)
      check_name(t.ffn_workers[i].name, t.ffn_workers[i].where, "ffn_workers[" + std::to_string(i) + "]");

    // Every referenced node is declared.
    std::vector<std::string> node_names;
    for (const auto& n : t.nodes) node_names.push_back(n.name);
    const bool nodes_read = find(top, "nodes") != nullptr;
    auto check_node = [&](const std::string& node, const std::string& who, const std::string& path) {
      if (node.empty() || !nodes_read || t.find_node(node)) return;
      r.error(t.location_of(path), who + " is on node '" + node + "', which is not declared under 'nodes'" +
                                       did_you_mean(node, node_names) + "; declared nodes: " +
                                       (node_names.empty() ? std::string("none") : join(node_names)));
    };
    check_node(t.coordinator.node, "the coordinator", "coordinator.node");
    // Standbys: on declared nodes, and no two coordinators on one node and port.
    for (std::size_t i = 0; i < t.coordinator.standby.size(); ++i) {
      const auto& sb = t.coordinator.standby[i];
      const std::string path = "coordinator.standby[" + std::to_string(i) + "]";
      check_node(sb.node, "standby coordinator " + std::to_string(i + 1), path);
      const int port = sb.port ? sb.port : t.coordinator.port;
      auto clash = [&](const std::string& node, int other_port) { return node == sb.node && other_port == port; };
      std::string with;
      if (clash(t.coordinator.node, t.coordinator.port)) with = "the primary coordinator";
      for (std::size_t j = 0; j < i && with.empty(); ++j)
        if (clash(t.coordinator.standby[j].node,
                  t.coordinator.standby[j].port ? t.coordinator.standby[j].port : t.coordinator.port))
          with = "standby coordinator " + std::to_string(j + 1);
      if (!with.empty())
        r.error(sb.where, "standby coordinator " + std::to_string(i + 1) + " listens on node '" + sb.node +
                              "', port " + std::to_string(port) + ", as " + with +
                              " does; expected another node or another port ({node: " + sb.node + ", port: N})");
    }
    for (std::size_t i = 0; i < t.attention_workers.size(); ++i)
      check_node(t.attention_workers[i].node, "attention worker '" + t.attention_workers[i].name + "'",
                 "attention_workers[" + std::to_string(i) + "].node");
    for (std::size_t i = 0; i < t.ffn_workers.size(); ++i)
      check_node(t.ffn_workers[i].node, "FFN worker '" + t.ffn_workers[i].name + "'",
                 "ffn_workers[" + std::to_string(i) + "].node");

    // At least one worker of each role.
    auto check_role = [&](std::string_view key, std::size_t count, std::string_view role) {
      const entry* e = find(top, key);
      if (!e) return;  // reported as missing
      if (count == 0 && e->value.IsSequence() && e->value.size() == 0)
        r.error(e->value_at, "'" + std::string(key) + "' is empty: a cluster needs at least one " +
                                 std::string(role));
    };
    check_role("attention_workers", t.attention_workers.size(), "attention worker");
    check_role("ffn_workers", t.ffn_workers.size(), "FFN worker");

    // Fixed data ports stay in range and off the coordinator's port.
    const int workers = static_cast<int>(t.attention_workers.size() + t.ffn_workers.size());
    if (t.transport.base_port > 0) {
      const int last = t.transport.base_port + workers - 1;
      if (last > 65535)
        r.error(t.location_of("transport.base_port"),
                "port out of range: data ports base_port.." + std::to_string(last) + " (one per worker) exceed 65535");
      const int offset = t.coordinator.port - t.transport.base_port;
      if (offset >= 0 && offset < workers) {
        const bool attention = offset < static_cast<int>(t.attention_workers.size());
        const std::string& node = attention ? t.attention_workers[offset].node
                                            : t.ffn_workers[offset - t.attention_workers.size()].node;
        const std::string& name = attention ? t.attention_workers[offset].name
                                            : t.ffn_workers[offset - t.attention_workers.size()].name;
        if (node == t.coordinator.node)
          r.error(t.location_of("coordinator.port"),
                  "port " + std::to_string(t.coordinator.port) + " is used twice on node '" + node +
                      "': by the coordinator and as the data port of worker '" + name +
                      "' (transport.base_port + its index)");
      }
    }

    // Loopback moves bytes inside one process.
    if (t.transport.kind == transport_kind::loopback) {
      std::set<std::string> used;
      for (const auto& w : t.attention_workers) used.insert(w.node);
      for (const auto& w : t.ffn_workers) used.insert(w.node);
      if (used.size() > 1)
        r.error(t.location_of("transport.kind"),
                "transport 'loopback' works inside one process, but workers are on " + std::to_string(used.size()) +
                    " nodes (" + join(std::vector<std::string>(used.begin(), used.end())) + "); expected 'ucx'");
    }

    // Processes: known members, each at most once, all on one node.
    std::map<std::string, std::string> process_of;
    std::set<std::string> process_names;
    for (std::size_t i = 0; i < t.processes.size(); ++i) {
      const auto& p = t.processes[i];
      const std::string path = "processes[" + std::to_string(i) + "]";
      if (!p.name.empty() && !process_names.insert(p.name).second)
        r.error(t.location_of(path + ".name"), "duplicate process name '" + p.name + "'");
      std::string node_of_process;
      for (std::size_t j = 0; j < p.members.size(); ++j) {
        const std::string& m = p.members[j];
        const source_location at = t.location_of(path + ".workers[" + std::to_string(j) + "]");
        std::string node;
        if (m == "coordinator") {
          node = t.coordinator.node;
        } else if (int a = t.attention_worker_index(m); a >= 0) {
          node = t.attention_workers[a].node;
        } else if (int f = t.ffn_worker_index(m); f >= 0) {
          node = t.ffn_workers[f].node;
        } else {
          std::vector<std::string> names{"coordinator"};
          for (const auto& w : t.attention_workers) names.push_back(w.name);
          for (const auto& w : t.ffn_workers) names.push_back(w.name);
          r.error(at, "unknown worker '" + m + "' in process '" + p.name + "'" + did_you_mean(m, names) +
                          "; expected one of: " + join(names));
          continue;
        }
        auto [it, inserted] = process_of.emplace(m, p.name);
        if (!inserted) {
          r.error(at, "'" + m + "' is in two processes: '" + it->second + "' and '" + p.name + "'");
          continue;
        }
        if (node_of_process.empty()) {
          node_of_process = node;
        } else if (node != node_of_process) {
          r.error(at, "'" + m + "' is on node '" + node + "' but process '" + p.name + "' runs on node '" +
                          node_of_process + "'; expected the workers of a process on one node");
        }
      }
    }
    (void)top_at;
  }
};

}  // namespace

checked<topology> parse_text(std::string_view yaml, const std::string& file, const std::string& directory) {
  checked<topology> result;
  topology t;
  t.file = file;
  t.directory = directory.empty() ? std::string(".") : directory;
  reader r(file, t);
  try {
    std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml));
    const source_location start{file, 1, 1};
    if (documents.empty() || documents.front().IsNull()) {
      r.error(start, "the file is empty: expected a mapping with the keys " + join(top_keys));
    } else if (!documents.front().IsMap()) {
      r.error(r.at(documents.front()).line ? r.at(documents.front()) : start,
              "expected a mapping at the top level (keys " + join(top_keys) + "), got " +
                  describe(documents.front()));
    } else {
      if (documents.size() > 1)
        r.error(r.at(documents[1]).line ? r.at(documents[1]) : start,
                "expected one YAML document, found " + std::to_string(documents.size()));
      parser p{r, t};
      const source_location top_at = start;
      auto top = r.mapping(documents.front(), top_at, "the top level", "", top_keys);
      if (top) {
        // Order matters: the model's combine mode and the worker names are known before placement.
        if (const entry* e = find(*top, "cluster")) p.cluster(*e);
        if (const entry* e = r.required(*top, "model", top_at, "the top level")) p.model(*e);
        if (const entry* e = r.required(*top, "nodes", top_at, "the top level")) p.nodes(*e);
        if (const entry* e = r.required(*top, "coordinator", top_at, "the top level")) p.coordinator(*e);
        if (const entry* e = find(*top, "transport")) p.transport(*e);
        if (const entry* e = find(*top, "pipeline")) p.pipeline(*e);
        if (const entry* e = find(*top, "limits")) p.limits(*e);
        if (const entry* e = r.required(*top, "attention_workers", top_at, "the top level"))
          p.attention_workers(*e);
        if (const entry* e = r.required(*top, "ffn_workers", top_at, "the top level")) p.ffn_workers(*e);
        if (const entry* e = find(*top, "processes")) p.processes(*e);
        if (const entry* e = find(*top, "placement")) p.placement(*e);
        if (const entry* e = find(*top, "faults")) p.faults(*e);
        p.cross_checks(*top, top_at);
      }
    }
  } catch (const YAML::Exception& e) {
    source_location where{file, 0, 0};
    if (!e.mark.is_null() && e.mark.line >= 0) where = {file, e.mark.line + 1, e.mark.column + 1};
    r.error(where, "YAML syntax error: " + (e.msg.empty() ? std::string(e.what()) : e.msg));
  } catch (const std::exception& e) {
    r.error(source_location{file, 0, 0}, std::string("cannot read the topology: ") + e.what());
  }
  // Diagnostics in file order, so the user reads them top to bottom.
  std::stable_sort(r.errors.begin(), r.errors.end(), [](const diagnostic& a, const diagnostic& b) {
    return std::tie(a.where.line, a.where.column) < std::tie(b.where.line, b.where.column);
  });
  result.errors = std::move(r.errors);
  if (result.errors.empty()) result.value = std::move(t);
  return result;
}

expected<void> check_fault_rule(const topology& t, std::string_view text) {
  const std::string quoted = "fault rule '" + std::string(text) + "': ";
  // parse_rule checks the fields against the kind too; its messages name the rule.
  auto rule = afd::faults::parse_rule(text);
  if (!rule) return error{errc::invalid_argument, rule.err().message()};
  for (const std::string* n : {&rule->worker, &rule->peer})
    if (!n->empty() && *n != "coordinator" && t.ffn_worker_index(*n) < 0 && t.attention_worker_index(*n) < 0) {
      std::vector<std::string> names;
      for (const auto& a : t.attention_workers) names.push_back(a.name);
      for (const auto& f : t.ffn_workers) names.push_back(f.name);
      return error{errc::invalid_argument, quoted + "worker '" + *n + "' is not in the topology (" + join(names) + ")" +
                                               did_you_mean(*n, names)};
    }
  return {};
}

checked<topology> parse_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    checked<topology> result;
    result.errors.push_back(diagnostic{source_location{path, 0, 0}, "cannot open the topology file"});
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::string directory = std::filesystem::path(path).parent_path().string();
  return parse_text(text.str(), path, directory.empty() ? "." : directory);
}

expected<topology> load_file(const std::string& path) {
  auto parsed = parse_file(path);
  if (!parsed.ok()) {
    const bool syntax = !parsed.errors.empty() &&
                        parsed.errors.front().message.rfind("YAML syntax error", 0) == 0;
    return parsed.to_error(syntax ? errc::parse_error : errc::invalid_config);
  }
  return std::move(*parsed.value);
}

}  // namespace afd::topology
