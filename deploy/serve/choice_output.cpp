#include "deploy/serve/choice_output.hpp"

#include <algorithm>

namespace afd::serve {

choice_output::choice_output(const text::tokenizer& tok, bool skip_special_tokens, std::vector<std::string> stop,
                             std::vector<std::int32_t> hidden_ids)
    : decoder_(tok.make_stream_decoder(skip_special_tokens)), stop_(std::move(stop)), hidden_(std::move(hidden_ids)) {
  for (const auto& s : stop_) longest_stop_ = std::max(longest_stop_, s.size());
}

void choice_output::push(std::int32_t id) {
  if (stopped_ || finished_) return;
  ids_.push_back(id);
  if (std::find(hidden_.begin(), hidden_.end(), id) != hidden_.end()) return;
  const std::size_t before = text_.size();
  text_ += decoder_.push(id);
  cut_at_stop(before);
}

void choice_output::finish() {
  if (stopped_ || finished_) return;
  finished_ = true;
  const std::size_t before = text_.size();
  text_ += decoder_.finish();
  cut_at_stop(before);
}

void choice_output::cut_at_stop(std::size_t added_at) {
  if (stop_.empty() || text_.size() == added_at) return;
  // A stop string that ends in the new text may start up to longest_stop_ - 1 bytes before it.
  const std::size_t from = added_at > longest_stop_ ? added_at - longest_stop_ + 1 : 0;
  std::size_t first = std::string::npos;
  for (const auto& s : stop_) {
    const auto at = text_.find(s, from);
    if (at != std::string::npos) first = std::min(first, at);
  }
  if (first == std::string::npos) return;
  text_.resize(first);
  text_taken_ = std::min(text_taken_, text_.size());
  stopped_ = true;
}

choice_output::piece choice_output::take(bool all) {
  piece p;
  std::size_t ready = text_.size();
  if (!all && !stopped_ && !finished_) {
    // Hold back the longest tail that is a proper prefix of a stop string.
    for (const auto& s : stop_) {
      const std::size_t max_len = std::min(s.size() - 1, text_.size() - text_taken_);
      for (std::size_t len = max_len; len > 0; --len) {
        if (text_.compare(text_.size() - len, len, s, 0, len) == 0) {
          ready = std::min(ready, text_.size() - len);
          break;
        }
      }
    }
  }
  if (ready > text_taken_) p.text = text_.substr(text_taken_, ready - text_taken_);
  text_taken_ = std::max(text_taken_, ready);
  p.token_ids.assign(ids_.begin() + static_cast<std::ptrdiff_t>(ids_taken_), ids_.end());
  ids_taken_ = ids_.size();
  return p;
}

}  // namespace afd::serve
