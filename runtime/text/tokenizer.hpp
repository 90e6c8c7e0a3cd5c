#pragma once
/// Hugging Face `tokenizer.json` byte-level BPE tokenizers (DeepSeek-V3, Step-3): encode text to
/// token ids and decode ids back to text, with the same ids and text as Hugging Face's own
/// `tokenizers` library. Immutable after load; every const method is safe to call concurrently.
///
/// Supported pieces of tokenizer.json (anything else is refused at load with errc::unsupported):
/// - normalizer: null or an empty `Sequence`;
/// - pre_tokenizer: `Split` (Regex or String pattern; behaviours Removed, Isolated,
///   MergedWithPrevious, MergedWithNext, Contiguous; invert), `ByteLevel` (add_prefix_space,
///   use_regex), `Sequence` of these;
/// - model: `BPE` (merges as "a b" strings or [a, b] pairs, byte_fallback, ignore_merges, unk_token,
///   fuse_unk, continuing_subword_prefix, end_of_word_suffix; no dropout);
/// - added_tokens (single_word, lstrip, rstrip, normalized, special);
/// - post_processor: null, `ByteLevel`, `TemplateProcessing`, `Sequence` of these;
/// - decoder: null, `ByteLevel`, `Sequence` of ByteLevel.
///
/// Invalid UTF-8 input: every ill-formed subsequence is replaced by U+FFFD before encoding, exactly
/// as a WHATWG TextDecoder or Python's `bytes.decode("utf-8", errors="replace")` would (Hugging Face's
/// tokenizers only accept valid strings, so that is what a caller of theirs has to do first).
///
/// BOS rule: `encode(text, true)` applies the post-processor as `tokenizers` does. A tokenizer made by
/// `from_model_dir` whose tokenizer_config.json says `add_bos_token: true` (or `add_eos_token`) gets
/// the post-processor transformers' LlamaTokenizerFast builds from those flags, so that
/// `encode(text, true)` equals `AutoTokenizer(...)(text)["input_ids"]`: BOS first (EOS last).

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace afd::text {

namespace detail {
struct tokenizer_model;
}

/// A loaded tokenizer; cheap to copy (the tables are shared and immutable).
class tokenizer {
 public:
  /// Parses a tokenizer.json file; errors name the file and the field (parse_error for bad JSON,
  /// unsupported for a model type or component that is not implemented, invalid_config for a bad
  /// value, invalid_argument for a regex that does not compile, io_error when unreadable).
  static expected<tokenizer> load(const std::string& tokenizer_json);
  /// Parses tokenizer.json text; `name` stands for the file in error messages.
  static expected<tokenizer> parse(std::string_view json_text, const std::string& name = "tokenizer.json");
  /// Loads `dir`/tokenizer.json plus `dir`/tokenizer_config.json when present (bos/eos tokens,
  /// add_bos_token/add_eos_token, chat_template).
  static expected<tokenizer> from_model_dir(const std::string& dir);

  /// Token ids of `text`; `add_special_tokens` applies the post-processor (BOS, see above).
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens) const;
  /// Text of `ids`: unknown ids are skipped, special tokens too when `skip_special_tokens`; bytes
  /// that do not form valid UTF-8 become U+FFFD (as Hugging Face's decode does).
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const;

  /// Decodes a stream of ids one at a time; holds back the bytes of a character split across
  /// tokens. The concatenation of every push() and finish() equals decode() of all the ids.
  class stream_decoder {
   public:
    /// Text that became complete with `id` (possibly empty).
    std::string push(std::int32_t id);
    /// The held-back bytes, each incomplete character as U+FFFD; the decoder is reset.
    std::string finish();

   private:
    friend class tokenizer;
    stream_decoder(std::shared_ptr<const detail::tokenizer_model> model, bool skip_special_tokens);
    std::shared_ptr<const detail::tokenizer_model> model_;
    bool skip_special_tokens_ = false;
    std::string pending_;  ///< bytes of an incomplete UTF-8 sequence
    bool started_ = false;  ///< a token was emitted (the decoder without a ByteLevel step joins with spaces)
  };
  /// A new stream decoder over this tokenizer.
  stream_decoder make_stream_decoder(bool skip_special_tokens) const;

  /// One more than the largest id (model vocabulary and added tokens): the embedding rows a model needs.
  std::int32_t vocab_size() const;
  /// The id of a token string (model vocabulary or added token).
  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  /// The token string of an id.
  std::optional<std::string> id_to_token(std::int32_t id) const;
  /// True when `id` is an added token marked special.
  bool is_special(std::int32_t id) const;
  /// The BOS token and its id, from tokenizer_config.json (from_model_dir only).
  std::optional<std::int32_t> bos_id() const;
  std::optional<std::string> bos_token() const;
  /// The EOS token and its id, from tokenizer_config.json (from_model_dir only).
  std::optional<std::int32_t> eos_id() const;
  std::optional<std::string> eos_token() const;
  /// The chat template of tokenizer_config.json, when it has one.
  std::optional<std::string> chat_template() const;

 private:
  std::shared_ptr<const detail::tokenizer_model> model_;
};

}  // namespace afd::text
