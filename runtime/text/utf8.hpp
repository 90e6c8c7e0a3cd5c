#pragma once
/// UTF-8 helpers of the text layer (internal): decoding one code point, the WHATWG replacement of
/// invalid sequences, and validity checks used to hold back split characters when streaming.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace afd::text::detail {

/// U+FFFD REPLACEMENT CHARACTER in UTF-8.
inline constexpr std::string_view replacement_character = "\xEF\xBF\xBD";

/// Length in bytes of the well-formed sequence starting at s[i], or 0 when the bytes there do not
/// start a well-formed sequence (Unicode Table 3-7: no overlongs, no surrogates, <= U+10FFFF).
std::size_t valid_sequence_length(std::string_view s, std::size_t i);

/// Length of the "maximal subpart" of an ill-formed sequence at s[i] (at least 1): the bytes that
/// one U+FFFD replaces under the WHATWG Encoding Standard (TextDecoder, Python's errors="replace").
std::size_t maximal_subpart_length(std::string_view s, std::size_t i);

/// `s` with every ill-formed subsequence replaced by U+FFFD, as WHATWG's UTF-8 decoder does.
std::string to_valid_utf8(std::string_view s);

/// True when `s` is well-formed UTF-8 throughout.
bool is_valid_utf8(std::string_view s);

/// Number of trailing bytes of `s` that form an incomplete but so far valid prefix of a UTF-8
/// sequence (0 to 3): the bytes a streaming decoder must hold back until the next token.
std::size_t incomplete_tail_length(std::string_view s);

/// Decodes the code point of the valid sequence at s[i] (the caller checked validity).
char32_t decode_at(std::string_view s, std::size_t i, std::size_t length);

/// Appends the UTF-8 encoding of `cp` to `out`.
void append_utf8(std::string& out, char32_t cp);

/// Unicode White_Space property (what Rust's `\s` matches).
bool is_unicode_whitespace(char32_t cp);

}  // namespace afd::text::detail
