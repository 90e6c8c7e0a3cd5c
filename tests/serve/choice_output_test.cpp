// choice_output: the text of a choice as tokens arrive, against the tokenizer's own decode.
#include "deploy/serve/choice_output.hpp"

#include <gtest/gtest.h>

namespace {

using afd::serve::choice_output;

afd::text::tokenizer tiny() {
  static const auto t = afd::text::tokenizer::load(std::string(AFD_TEXT_DATA_DIR) + "/tiny_split.json");
  EXPECT_TRUE(t) << t.err().message();
  return *t;
}

/// Pushes the ids of `text` one at a time, taking after each; returns what was taken.
std::string stream(choice_output& out, const std::vector<std::int32_t>& ids, std::vector<std::int32_t>& taken_ids) {
  std::string text;
  for (auto id : ids) {
    out.push(id);
    auto p = out.take();
    text += p.text;
    taken_ids.insert(taken_ids.end(), p.token_ids.begin(), p.token_ids.end());
  }
  out.finish();
  auto p = out.take(true);
  text += p.text;
  taken_ids.insert(taken_ids.end(), p.token_ids.begin(), p.token_ids.end());
  return text;
}

TEST(choice_output, without_stops_the_stream_is_the_decode) {
  const auto tok = tiny();
  const std::string text = "caf\xc3\xa9 na\xc3\xafve \xe4\xb8\x96\xe7\x95\x8c end";
  const auto ids = tok.encode(text, false);
  choice_output out(tok, true, {}, {});
  std::vector<std::int32_t> taken;
  EXPECT_EQ(stream(out, ids, taken), tok.decode(ids, true));
  EXPECT_EQ(taken, ids);
  EXPECT_EQ(out.text(), tok.decode(ids, true));
}

TEST(choice_output, a_stop_string_cuts_the_text_and_is_never_sent) {
  const auto tok = tiny();
  const auto ids = tok.encode("one two xy three xyz four", false);
  choice_output out(tok, true, {"xyz", "nothing"}, {});
  std::vector<std::int32_t> taken;
  const std::string text = stream(out, ids, taken);
  EXPECT_EQ(text, "one two xy three ");
  EXPECT_EQ(out.text(), text);
  EXPECT_TRUE(out.stopped());
  // The ids up to the one that completed the stop string.
  EXPECT_LT(taken.size(), ids.size());
  EXPECT_EQ(tok.decode(taken, true).substr(0, text.size()), text);
  EXPECT_NE(tok.decode(taken, true).find("xyz"), std::string::npos);
}

TEST(choice_output, text_that_may_begin_a_stop_string_waits) {
  const auto tok = tiny();
  choice_output out(tok, true, {"ab!"}, {});
  for (auto id : tok.encode("xa", false)) out.push(id);
  EXPECT_EQ(out.take().text, "x");  // "a" might begin "ab!"
  for (auto id : tok.encode("b", false)) out.push(id);
  EXPECT_EQ(out.take().text, "");
  for (auto id : tok.encode("c", false)) out.push(id);
  EXPECT_EQ(out.take().text, "abc");  // it did not
}

TEST(choice_output, hidden_ids_count_as_tokens_but_give_no_text) {
  const auto tok = tiny();
  auto ids = tok.encode("hi", false);
  ids.push_back(7);
  choice_output out(tok, true, {}, {7});
  std::vector<std::int32_t> taken;
  EXPECT_EQ(stream(out, ids, taken), "hi");
  EXPECT_EQ(taken, ids);
}

}  // namespace
