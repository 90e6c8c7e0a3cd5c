#pragma once
// The oracle corpus (tests/text/data/corpus): one case per line, '#' comments, escapes \\ \n \r
// \t \xHH (a raw byte) and \u{H..} (a code point). Parsed here for the C++ side and separately in
// tests/text/npm/oracle.js for the Hugging Face side.

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace afd::text::testing {

inline void append_code_point(std::string& out, unsigned long cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

/// The raw bytes of every case (invalid UTF-8 kept as is).
inline std::vector<std::string> read_corpus(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<std::string> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::string bytes;
    for (std::size_t i = 0; i < line.size();) {
      if (line[i] != '\\') {
        bytes.push_back(line[i++]);
        continue;
      }
      const char e = line.at(i + 1);
      if (e == '\\') bytes.push_back('\\'), i += 2;
      else if (e == 'n') bytes.push_back('\n'), i += 2;
      else if (e == 'r') bytes.push_back('\r'), i += 2;
      else if (e == 't') bytes.push_back('\t'), i += 2;
      else if (e == 'x') bytes.push_back(static_cast<char>(std::stoul(line.substr(i + 2, 2), nullptr, 16))), i += 4;
      else if (e == 'u' && line.at(i + 2) == '{') {
        const auto end = line.find('}', i);
        append_code_point(bytes, std::stoul(line.substr(i + 3, end - i - 3), nullptr, 16));
        i = end + 1;
      } else {
        throw std::runtime_error("bad escape in corpus line: " + line);
      }
    }
    cases.push_back(std::move(bytes));
  }
  return cases;
}

}  // namespace afd::text::testing
