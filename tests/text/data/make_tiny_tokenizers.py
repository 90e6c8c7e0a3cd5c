#!/usr/bin/env python3
"""Writes the small tokenizer.json files of the oracle tests (tiny_*.json), each exercising options
of Hugging Face's tokenizer.json that DeepSeek-V3's file does not use. Run from this folder."""
import json


def bytes_char():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BC = bytes_char()


def bl(s):
    return ''.join(BC[b] for b in s.encode('utf-8'))


def byte_vocab():
    return {BC[b]: b for b in range(256)}


def add_merges(vocab, merges, prefix=""):
    for a, b in merges:
        for part in (a, b, a + b[len(prefix):] if b.startswith(prefix) else a + b):
            if part not in vocab:
                vocab[part] = len(vocab)
    return vocab


def tok(id, content, special=False, lstrip=False, rstrip=False, single_word=False, normalized=None):
    return {"id": id, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": (not special) if normalized is None else normalized, "special": special}


def bpe(vocab, merges, **options):
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": vocab, "merges": merges}
    model.update(options)
    return model


# 1. Byte-level with regex and prefix space, merges as [a, b] pairs, TemplateProcessing "<s> $A </s>",
#    added tokens with every flag (lstrip, rstrip, single_word, normalized, special, overlapping).
merges = [(bl(" "), "t"), ("h", "e"), (bl(" t"), "he"), ("i", "n"), (bl(" "), "a"), ("e", "r"), ("a", "b"),
          ("ab", "ab"), ("abab", "ab"), ("l", "l"), ("he", "ll"), ("hell", "o"), (bl(" "), "hello"), ("o", "r"),
          ("w", "or"), ("wor", "l"), ("worl", "d"), (bl(" "), "world"), (bl(" "), bl(" ")), (bl("  "), bl("  ")),
          (bl("\n"), bl("\n")), (bl("你")[:2], bl("你")[2]), ("1", "2"), ("12", "3"), (bl("é")[0], bl("é")[1])]
vocab = add_merges(byte_vocab(), merges)
base = len(vocab)
added = [tok(base, "<s>", special=True), tok(base + 1, "</s>", special=True),
         tok(base + 2, "[MASK]", special=True, lstrip=True, rstrip=True),
         tok(base + 3, "word", single_word=True), tok(base + 4, "<tool>", rstrip=True, normalized=False),
         tok(base + 5, "<pad>", special=True, lstrip=True), tok(base + 6, "ab cd", normalized=True),
         tok(base + 7, "<s><s>", special=True)]
specials = {"<s>": {"id": "<s>", "ids": [base], "tokens": ["<s>"]},
            "</s>": {"id": "</s>", "ids": [base + 1], "tokens": ["</s>"]}}
t1 = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
      "post_processor": {"type": "TemplateProcessing",
                         "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                         "special_tokens": specials},
      "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
      "model": bpe(vocab, [[a, b] for a, b in merges])}

# 2. Not byte-level: characters, byte fallback for ASCII bytes only (other characters become a
#    fused <unk>), ignore_merges, continuing_subword_prefix, Split MergedWithNext, Roberta
#    post-processor, no decoder (tokens joined with spaces).
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(0x80):
    vocab["<0x%02X>" % b] = len(vocab)
for c in "abcdefghijklmnopqrstuvwxyz ":
    vocab[c] = len(vocab)
    vocab["##" + c] = len(vocab)
for c in "你好":
    vocab[c] = len(vocab)
merges2 = [("h", "##e"), ("he", "##l"), ("hel", "##l"), ("hell", "##o"), ("w", "##o"), ("wo", "##r"),
           ("t", "##h"), ("th", "##e")]
vocab = add_merges(vocab, merges2, prefix="##")
vocab["world"] = len(vocab)  # reachable only through ignore_merges
t2 = {"version": "1.0", "truncation": None, "padding": None,
      "added_tokens": [tok(0, "<unk>", special=True), tok(1, "<s>", special=True), tok(2, "</s>", special=True)],
      "normalizer": {"type": "Sequence", "normalizers": []},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "MergedWithNext", "invert": False}]},
      "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1], "trim_offsets": True,
                         "add_prefix_space": False},
      "decoder": None,
      "model": bpe(vocab, [a + " " + b for a, b in merges2], unk_token="<unk>", continuing_subword_prefix="##",
                   fuse_unk=True, byte_fallback=True, ignore_merges=True)}

# 3. Split behaviours in sequence (Removed, a String pattern MergedWithPrevious, MergedWithNext,
#    Contiguous inverted, Isolated), then ByteLevel without regex or prefix space; "a b" merges;
#    a Sequence post-processor appending a special token.
merges3 = [("t", "h"), ("th", "e"), ("a", "n"), ("an", "d"), (bl(" "), "the"), ("i", "s"), ("T", "he")]
vocab = add_merges(byte_vocab(), merges3)
end = len(vocab)
t3 = {"version": "1.0", "truncation": None, "padding": None,
      "added_tokens": [tok(end, "<|end|>", special=True)],
      "normalizer": None,
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"Regex": "[,;]"}, "behavior": "Removed", "invert": False},
          {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False},
          {"type": "Split", "pattern": {"Regex": "\\p{Lu}"}, "behavior": "MergedWithNext", "invert": False},
          {"type": "Split", "pattern": {"Regex": "[a-z]+"}, "behavior": "Contiguous", "invert": True},
          {"type": "Split", "pattern": {"Regex": "\\p{N}{1,2}"}, "behavior": "Isolated", "invert": False},
          {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
      "post_processor": {"type": "Sequence", "processors": [
          {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
          {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}},
                                                    {"SpecialToken": {"id": "<|end|>", "type_id": 0}}],
           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
           "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [end], "tokens": ["<|end|>"]}}}]},
      "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
      "model": bpe(vocab, [a + " " + b for a, b in merges3])}

for name, t in (("tiny_template.json", t1), ("tiny_fallback.json", t2), ("tiny_split.json", t3)):
    with open(name, "w", encoding="utf-8") as f:
        json.dump(t, f, ensure_ascii=False, indent=1)
        f.write("\n")
