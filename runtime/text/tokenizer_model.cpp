#include "runtime/text/tokenizer_model.hpp"

#include <algorithm>
#include <queue>

#include "runtime/text/utf8.hpp"

namespace afd::text::detail {

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet (GPT-2): printable bytes map to themselves, the others to U+0100 onwards.

const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    auto keeps_itself = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = keeps_itself(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      append_utf8(t[static_cast<std::size_t>(b)], cp);
    }
    return t;
  }();
  return table;
}

int byte_level_byte(char32_t cp) {
  static const std::unordered_map<char32_t, int> inverse = [] {
    std::unordered_map<char32_t, int> m;
    const auto& chars = byte_level_chars();
    for (int b = 0; b < 256; ++b) {
      const std::string& s = chars[static_cast<std::size_t>(b)];
      m.emplace(decode_at(s, 0, s.size()), b);
    }
    return m;
  }();
  const auto it = inverse.find(cp);
  return it == inverse.end() ? -1 : it->second;
}

// ---------------------------------------------------------------------------------------------
// Added-token trie.

void added_token_matcher::add(std::string_view pattern, std::uint32_t value) {
  if (pattern.empty()) return;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
  std::uint32_t at = 0;
  for (const char ch : pattern) {
    const auto b = static_cast<unsigned char>(ch);
    auto& children = nodes_[at].children;
    auto it = std::lower_bound(children.begin(), children.end(), b,
                               [](const auto& child, unsigned char key) { return child.first < key; });
    if (it != children.end() && it->first == b) {
      at = it->second;
    } else {
      const auto next = static_cast<std::uint32_t>(nodes_.size());
      children.insert(it, {b, next});
      nodes_.emplace_back();
      at = next;
    }
  }
  // The first pattern with this content wins, as HF keeps one entry per content.
  if (nodes_[at].value < 0) nodes_[at].value = value;
}

std::pair<std::size_t, std::uint32_t> added_token_matcher::longest_at(std::string_view text, std::size_t at) const {
  std::pair<std::size_t, std::uint32_t> best{0, 0};
  if (!first_byte_[static_cast<unsigned char>(text[at])]) return best;
  std::uint32_t node_index = 0;
  for (std::size_t i = at; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    const auto& children = nodes_[node_index].children;
    auto it = std::lower_bound(children.begin(), children.end(), b,
                               [](const auto& child, unsigned char key) { return child.first < key; });
    if (it == children.end() || it->first != b) break;
    node_index = it->second;
    if (nodes_[node_index].value >= 0) best = {i + 1 - at, static_cast<std::uint32_t>(nodes_[node_index].value)};
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Lookups.

std::optional<std::int32_t> tokenizer_model::token_to_id(std::string_view token) const {
  const std::string key(token);
  if (auto it = added_by_content.find(key); it != added_by_content.end()) return it->second;
  if (auto it = vocab.find(key); it != vocab.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> tokenizer_model::id_to_token(std::int32_t id) const {
  if (auto it = added_by_id.find(id); it != added_by_id.end()) return added[it->second].content;
  if (id >= 0 && static_cast<std::size_t>(id) < vocab_r.size() && has_id[static_cast<std::size_t>(id)])
    return vocab_r[static_cast<std::size_t>(id)];
  return std::nullopt;
}

bool tokenizer_model::is_special(std::int32_t id) const {
  const auto it = added_by_id.find(id);
  return it != added_by_id.end() && added[it->second].special;
}

bool tokenizer_model::token_bytes(std::int32_t id, bool skip_special_tokens, std::string& out) const {
  const std::string* token = nullptr;
  if (auto it = added_by_id.find(id); it != added_by_id.end()) {
    // HF skips by content: any id whose token text is a special token's content.
    token = &added[it->second].content;
  } else if (id >= 0 && static_cast<std::size_t>(id) < vocab_r.size() && has_id[static_cast<std::size_t>(id)]) {
    token = &vocab_r[static_cast<std::size_t>(id)];
  } else {
    return false;
  }
  if (skip_special_tokens) {
    const auto it = added_by_content.find(*token);
    if (it != added_by_content.end() && added[added_by_id.at(it->second)].special) return false;
  }
  if (decoder == decoder_kind::none) {
    out.append(*token);
    return true;
  }
  // ByteLevel: every char back to its byte; a token with a char outside the alphabet keeps its
  // own UTF-8 bytes (how special tokens such as <｜begin▁of▁sentence｜> survive decoding).
  const std::size_t mark = out.size();
  std::size_t i = 0;
  while (i < token->size()) {
    const std::size_t n = valid_sequence_length(*token, i);
    const int b = n == 0 ? -1 : byte_level_byte(decode_at(*token, i, n));
    if (b < 0) {
      out.resize(mark);
      out.append(*token);
      return true;
    }
    out.push_back(static_cast<char>(b));
    i += n;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// BPE (HF models/bpe: symbols of the word, then merges by rank, leftmost first among equals).

namespace {

struct symbol {
  std::int32_t id;
  std::int32_t prev;
  std::int32_t next;
  std::uint32_t length;  ///< bytes of the word it covers; 0 once merged into its left neighbour
};

struct merge_candidate {
  std::uint32_t rank;
  std::uint32_t pos;
  std::int32_t new_id;
  bool operator>(const merge_candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
}

}  // namespace

void tokenizer_model::bpe(std::string_view piece, std::vector<std::int32_t>& out) const {
  if (piece.empty()) return;
  const auto& chars = byte_level_chars();

  if (ignore_merges) {
    std::string whole;
    if (byte_level) {
      for (const char ch : piece) whole += chars[static_cast<unsigned char>(ch)];
    } else {
      whole.assign(piece);
    }
    if (auto it = vocab.find(whole); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }

  // Initial symbols: one per byte (byte-level) or per character.
  std::vector<symbol> symbols;
  symbols.reserve(piece.size());
  bool has_unk = false;  // a pending unknown unit: (unk_id, unk_bytes)
  std::int32_t unk_id = 0;
  std::uint32_t unk_bytes = 0;
  auto add_symbol = [&](std::int32_t id, std::uint32_t length) {
    const auto index = static_cast<std::int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, length});
    if (index > 0) symbols[static_cast<std::size_t>(index - 1)].next = index;
  };
  const bool plain = continuing_subword_prefix.empty() && end_of_word_suffix.empty();
  std::size_t i = 0;
  std::string unit;
  while (i < piece.size()) {
    std::size_t unit_bytes = 1;
    std::int32_t id = -1;
    if (byte_level && plain) {
      id = byte_token_id[static_cast<unsigned char>(piece[i])];
      if (id < 0) unit = chars[static_cast<unsigned char>(piece[i])];
    } else {
      if (byte_level) {
        unit = chars[static_cast<unsigned char>(piece[i])];
      } else {
        unit_bytes = std::max<std::size_t>(1, valid_sequence_length(piece, i));
        unit.assign(piece.substr(i, unit_bytes));
      }
      if (i > 0 && !continuing_subword_prefix.empty()) unit = continuing_subword_prefix + unit;
      if (i + unit_bytes >= piece.size() && !end_of_word_suffix.empty()) unit += end_of_word_suffix;
      if (auto it = vocab.find(unit); it != vocab.end()) id = it->second;
    }
    if (id >= 0) {
      if (has_unk) {
        add_symbol(unk_id, unk_bytes);
        has_unk = false;
      }
      add_symbol(id, static_cast<std::uint32_t>(unit_bytes));
    } else {
      bool handled = false;
      if (byte_fallback) {
        std::vector<std::int32_t> byte_ids;
        for (const char ch : unit) {
          static const char* hex = "0123456789ABCDEF";
          const auto b = static_cast<unsigned char>(ch);
          const std::string code = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
          const auto it = vocab.find(code);
          if (it == vocab.end()) break;
          byte_ids.push_back(it->second);
        }
        if (byte_ids.size() == unit.size()) {
          for (const auto b : byte_ids) add_symbol(b, 1);
          handled = true;
        }
      }
      if (!handled && unk_token) {
        if (has_unk && fuse_unk) {
          unk_bytes += static_cast<std::uint32_t>(unit_bytes);
        } else {
          if (has_unk) add_symbol(unk_id, unk_bytes);
          has_unk = true;
          unk_id = vocab.at(*unk_token);  // checked at load
          unk_bytes = static_cast<std::uint32_t>(unit_bytes);
        }
      }
      // Without byte fallback or unk token the unit is dropped, as in HF.
    }
    i += unit_bytes;
  }
  if (has_unk) add_symbol(unk_id, unk_bytes);

  if (symbols.size() > 1) {
    std::priority_queue<merge_candidate, std::vector<merge_candidate>, std::greater<>> queue;
    for (std::size_t k = 0; k + 1 < symbols.size(); ++k) {
      if (auto it = merges.find(pair_key(symbols[k].id, symbols[k + 1].id)); it != merges.end())
        queue.push({it->second.first, static_cast<std::uint32_t>(k), it->second.second});
    }
    while (!queue.empty()) {
      const merge_candidate top = queue.top();
      queue.pop();
      symbol& left = symbols[top.pos];
      if (left.length == 0 || left.next < 0) continue;
      const symbol right = symbols[static_cast<std::size_t>(left.next)];
      const auto current = merges.find(pair_key(left.id, right.id));
      if (current == merges.end() || current->second.second != top.new_id) continue;  // stale entry
      left.id = top.new_id;
      left.length += right.length;
      symbols[static_cast<std::size_t>(left.next)].length = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = static_cast<std::int32_t>(top.pos);
      if (left.prev >= 0) {
        const symbol& before = symbols[static_cast<std::size_t>(left.prev)];
        if (auto it = merges.find(pair_key(before.id, left.id)); it != merges.end())
          queue.push({it->second.first, static_cast<std::uint32_t>(left.prev), it->second.second});
      }
      if (left.next >= 0) {
        const symbol& after = symbols[static_cast<std::size_t>(left.next)];
        if (auto it = merges.find(pair_key(left.id, after.id)); it != merges.end())
          queue.push({it->second.first, top.pos, it->second.second});
      }
    }
  }
  for (const auto& s : symbols)
    if (s.length != 0) out.push_back(s.id);
}

// ---------------------------------------------------------------------------------------------
// The pipeline: added tokens, pre-tokenizer, BPE.

namespace {

struct piece {
  std::string_view text;
  std::int32_t token = -1;  ///< an added token's id, or -1 for text still to tokenize
};

// Rust's `\w` on one character: alphanumeric, marks, connector punctuation, join controls.
bool is_word_char(std::string_view text, std::size_t at, std::size_t length) {
  static const auto word = regex::compile("\\A\\w");
  const char32_t cp = decode_at(text, at, length);
  if (cp == 0x200C || cp == 0x200D) return true;
  return word && word->matches_at(text.substr(at, length), 0);
}

// Start of the last character of text[0, end).
std::size_t last_char_start(std::string_view text, std::size_t end) {
  std::size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  return i;
}

// HF AddedVocabulary::find_matches on one piece.
void split_added(const tokenizer_model& m, const added_token_matcher& matcher, std::string_view sentence,
                 std::vector<piece>& out) {
  if (matcher.empty()) {
    out.push_back({sentence, -1});
    return;
  }
  std::size_t start_offset = 0;
  std::size_t at = 0;
  while (at < sentence.size()) {
    const auto [length, index] = matcher.longest_at(sentence, at);
    if (length == 0) {
      ++at;
      continue;
    }
    std::size_t start = at;
    std::size_t stop = at + length;
    at = stop;
    const added_token& token = m.added[index];
    if (token.single_word) {
      const bool start_space =
          start == 0 || !is_word_char(sentence, last_char_start(sentence, start),
                                      start - last_char_start(sentence, start));
      const bool stop_space =
          stop == sentence.size() ||
          !is_word_char(sentence, stop, std::max<std::size_t>(1, valid_sequence_length(sentence, stop)));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      std::size_t new_start = start;
      while (new_start > 0) {
        const std::size_t c = last_char_start(sentence, new_start);
        if (!is_unicode_whitespace(decode_at(sentence, c, new_start - c))) break;
        new_start = c;
      }
      start = std::max(new_start, start_offset);
    }
    if (token.rstrip) {
      while (stop < sentence.size()) {
        const std::size_t n = std::max<std::size_t>(1, valid_sequence_length(sentence, stop));
        if (!is_unicode_whitespace(decode_at(sentence, stop, n))) break;
        stop += n;
      }
      at = std::max(at, stop);
    }
    if (start_offset < start) out.push_back({sentence.substr(start_offset, start - start_offset), -1});
    out.push_back({sentence.substr(start, stop - start), token.id});
    start_offset = stop;
  }
  if (start_offset != sentence.size()) out.push_back({sentence.substr(start_offset), -1});
}

// HF NormalizedString::split with a behaviour, on matches covering the whole piece.
void split_by_behavior(std::string_view text, const std::vector<match_span>& matches, split_behavior behavior,
                       bool invert, std::vector<std::string>& out) {
  // (span, is_match) covering the text, as Pattern::find_matches gives them.
  std::vector<std::pair<match_span, bool>> spans;
  spans.reserve(matches.size() * 2 + 1);
  std::size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) spans.push_back({{prev, s}, invert});
    spans.push_back({{s, e}, !invert});
    prev = e;
  }
  if (prev != text.size()) spans.push_back({{prev, text.size()}, invert});

  std::vector<std::pair<match_span, bool>> result;  // (span, remove)
  result.reserve(spans.size());
  switch (behavior) {
    case split_behavior::isolated:
      for (const auto& [span, is_match] : spans) result.push_back({span, false});
      break;
    case split_behavior::removed:
      result = spans;
      break;
    case split_behavior::contiguous: {
      bool previous_match = false;
      for (const auto& [span, is_match] : spans) {
        if (is_match == previous_match && !result.empty())
          result.back().first.second = span.second;
        else
          result.push_back({span, false});
        previous_match = is_match;
      }
      break;
    }
    case split_behavior::merged_with_previous: {
      bool previous_match = false;
      for (const auto& [span, is_match] : spans) {
        if (is_match && !previous_match && !result.empty())
          result.back().first.second = span.second;
        else
          result.push_back({span, false});
        previous_match = is_match;
      }
      break;
    }
    case split_behavior::merged_with_next: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        const auto& [span, is_match] = *it;
        if (is_match && !previous_match && !result.empty())
          result.back().first.first = span.first;
        else
          result.push_back({span, false});
        previous_match = is_match;
      }
      std::reverse(result.begin(), result.end());
      break;
    }
  }
  for (const auto& [span, remove] : result) {
    if (remove || span.second == span.first) continue;
    out.emplace_back(text.substr(span.first, span.second - span.first));
  }
}

const regex& gpt2_regex() {
  static const regex re =
      *regex::compile("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
  return re;
}

void literal_matches(std::string_view text, std::string_view literal, std::vector<match_span>& out) {
  if (literal.empty()) return;
  std::size_t at = 0;
  while ((at = text.find(literal, at)) != std::string_view::npos) {
    out.emplace_back(at, at + literal.size());
    at += literal.size();
  }
}

}  // namespace

void tokenizer_model::encode(std::string_view text, std::vector<std::int32_t>& out) const {
  // 1. Added tokens: the non-normalized ones on the raw text, then the normalized ones on the
  //    (identity-)normalized pieces left over.
  std::vector<piece> first, pieces;
  split_added(*this, raw_matcher, text, first);
  for (const auto& p : first) {
    if (p.token >= 0)
      pieces.push_back(p);
    else
      split_added(*this, normalized_matcher, p.text, pieces);
  }

  // 2. Pre-tokenize each text piece, 3. BPE each resulting word.
  std::vector<std::string> words, next;
  std::vector<match_span> matches;
  for (const auto& p : pieces) {
    if (p.token >= 0) {
      out.push_back(p.token);
      continue;
    }
    if (p.text.empty()) continue;
    words.clear();
    words.emplace_back(p.text);
    for (const auto& step : pre_tokenizer) {
      next.clear();
      for (auto& word : words) {
        if (step.type == pre_tokenizer_step::kind::byte_level) {
          if (step.add_prefix_space && word[0] != ' ') word.insert(word.begin(), ' ');
          if (!step.use_regex) {
            next.push_back(std::move(word));
            continue;
          }
          matches.clear();
          gpt2_regex().find_all(word, matches);
          split_by_behavior(word, matches, split_behavior::isolated, false, next);
        } else {
          matches.clear();
          if (step.pattern)
            step.pattern->find_all(word, matches);
          else
            literal_matches(word, step.literal, matches);
          split_by_behavior(word, matches, step.behavior, step.invert, next);
        }
      }
      words.swap(next);
    }
    for (const auto& word : words) bpe(word, out);
  }
}

}  // namespace afd::text::detail
