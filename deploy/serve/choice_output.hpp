#pragma once
/// The text of one choice as its tokens arrive: ids decoded as a stream (a character split across
/// tokens waits for its last byte), stop strings cut the text (the stop string itself is never
/// returned), and text that might be the start of a stop string is held back until it is known
/// not to be.

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/text/tokenizer.hpp"

namespace afd::serve {

class choice_output {
 public:
  /// `hidden_ids`: ids whose text is not returned (EOS, stop_token_ids), though they count as tokens.
  choice_output(const text::tokenizer& tok, bool skip_special_tokens, std::vector<std::string> stop,
                std::vector<std::int32_t> hidden_ids);

  /// Adds a generated token; ignored once a stop string was found.
  void push(std::int32_t id);
  /// A stop string ended the text: later tokens are not part of the choice.
  bool stopped() const { return stopped_; }

  /// Text and ids not taken yet; text that could begin a stop string is held back unless `all`.
  struct piece {
    std::string text;
    std::vector<std::int32_t> token_ids;
  };
  piece take(bool all = false);
  /// No more tokens: the decoder's held-back bytes join the text (and may still hit a stop string).
  void finish();

  const std::string& text() const { return text_; }
  const std::vector<std::int32_t>& token_ids() const { return ids_; }

 private:
  void cut_at_stop(std::size_t searched_from);

  text::tokenizer::stream_decoder decoder_;
  std::vector<std::string> stop_;
  std::vector<std::int32_t> hidden_;
  std::size_t longest_stop_ = 0;
  std::string text_;
  std::vector<std::int32_t> ids_;
  std::size_t text_taken_ = 0, ids_taken_ = 0;
  bool stopped_ = false, finished_ = false;
};

}  // namespace afd::serve
