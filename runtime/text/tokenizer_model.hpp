#pragma once
/// The tables behind afd::text::tokenizer (internal): what tokenizer.json describes, parsed once
/// and shared, immutable, by every copy of a tokenizer and every stream decoder.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/core/error.hpp"
#include "runtime/text/regex.hpp"

namespace afd::text::detail {

/// How a Split pre-tokenizer treats the matched delimiters (HF SplitDelimiterBehavior).
enum class split_behavior : std::uint8_t { removed, isolated, merged_with_previous, merged_with_next, contiguous };

/// One step of the pre-tokenizer pipeline.
struct pre_tokenizer_step {
  enum class kind : std::uint8_t { split, byte_level } type = kind::split;
  // split
  std::optional<regex> pattern;  ///< Regex patterns (and String patterns, matched literally below)
  std::string literal;           ///< a String pattern
  split_behavior behavior = split_behavior::isolated;
  bool invert = false;
  // byte_level
  bool add_prefix_space = false;
  bool use_regex = true;
};

/// An entry of added_tokens.
struct added_token {
  std::string content;
  std::int32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

/// Leftmost-longest matching of added tokens (what HF does with Aho-Corasick), as a byte trie.
class added_token_matcher {
 public:
  /// Adds a pattern; `value` is an index into tokenizer_model::added.
  void add(std::string_view pattern, std::uint32_t value);
  bool empty() const { return nodes_.size() <= 1; }
  /// The longest pattern starting at text[at]: (length, value), or length 0 when none does.
  std::pair<std::size_t, std::uint32_t> longest_at(std::string_view text, std::size_t at) const;

 private:
  struct node {
    std::vector<std::pair<unsigned char, std::uint32_t>> children;  ///< sorted by byte
    std::int64_t value = -1;                                         ///< pattern ending here
  };
  std::vector<node> nodes_{node{}};
  std::array<bool, 256> first_byte_{};  ///< bytes that start some pattern (a quick reject)
};

/// The decoder of tokenizer.json.
enum class decoder_kind : std::uint8_t { none, byte_level };

/// Everything a tokenizer knows.
struct tokenizer_model {
  std::string file;  ///< for messages

  // BPE model
  std::unordered_map<std::string, std::int32_t> vocab;
  std::vector<std::string> vocab_r;            ///< id -> token ("" with has_id false for holes)
  std::vector<bool> has_id;                    ///< ids present in vocab_r
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, std::int32_t>> merges;  ///< (a,b) -> (rank, new id)
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  std::array<std::int32_t, 256> byte_token_id{};  ///< vocab id of the byte-level char of each byte, -1 if absent

  // added tokens
  std::vector<added_token> added;
  std::unordered_map<std::string, std::int32_t> added_by_content;
  std::unordered_map<std::int32_t, std::size_t> added_by_id;  ///< id -> index into added
  added_token_matcher raw_matcher;         ///< normalized == false
  added_token_matcher normalized_matcher;  ///< normalized == true

  // pipeline
  std::vector<pre_tokenizer_step> pre_tokenizer;
  bool byte_level = false;  ///< the pipeline ends with ByteLevel: pieces are BPE'd byte by byte
  std::vector<std::int32_t> post_prefix;  ///< ids the post-processor puts before the sequence
  std::vector<std::int32_t> post_suffix;  ///< ... and after it
  decoder_kind decoder = decoder_kind::none;

  // tokenizer_config.json
  std::optional<std::string> bos_token, eos_token, chat_template;
  std::optional<std::int32_t> bos_id, eos_id;

  std::int32_t vocab_size = 0;  ///< max id + 1

  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(std::int32_t id) const;
  bool is_special(std::int32_t id) const;
  /// The bytes the decoder turns token `id` into (the tokens are independent for the supported
  /// decoders); false when the id is unknown or skipped.
  bool token_bytes(std::int32_t id, bool skip_special_tokens, std::string& out) const;
  /// BPE of one pre-tokenized piece, ids appended to `out`.
  void bpe(std::string_view piece, std::vector<std::int32_t>& out) const;
  /// The whole pipeline on valid UTF-8.
  void encode(std::string_view text, std::vector<std::int32_t>& out) const;
};

/// Parses tokenizer.json text into a model.
expected<tokenizer_model> parse_tokenizer_json(std::string_view json_text, const std::string& file);

/// The byte -> char table of GPT-2's byte-level alphabet (as UTF-8 strings), and its inverse.
const std::array<std::string, 256>& byte_level_chars();
/// The byte a byte-level char stands for, or -1.
int byte_level_byte(char32_t cp);

}  // namespace afd::text::detail
