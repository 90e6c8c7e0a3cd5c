#!/usr/bin/env node
// Prints, as one JSON document, what Hugging Face's implementations make of afd's test inputs:
//   node oracle.js tokenize TOKENIZER_JSON CORPUS        encode/decode every corpus case
//   node oracle.js render TEMPLATE CONVERSATIONS_JSON     render every conversation
//   node oracle.js bench TOKENIZER_JSON CORPUS SECONDS    encode throughput on one thread
//   node oracle.js decode TOKENIZER_JSON IDS_JSON         decode ([[ids], ...]) with and without specials
// The corpus format (one case per line, # comments, escapes \\ \n \r \t \xHH \u{H..}) is parsed
// here and in tests/text/oracle_test.cpp independently.
"use strict";
const fs = require("fs");

function parseCorpus(path) {
  const cases = [];
  for (const line of fs.readFileSync(path, "utf8").split("\n")) {
    if (line.length === 0 || line.startsWith("#")) continue;
    const bytes = [];
    for (let i = 0; i < line.length; ) {
      const c = line[i];
      if (c !== "\\") {
        const cp = line.codePointAt(i);
        bytes.push(...Buffer.from(String.fromCodePoint(cp), "utf8"));
        i += cp > 0xffff ? 2 : 1;
        continue;
      }
      const e = line[i + 1];
      if (e === "\\") { bytes.push(0x5c); i += 2; }
      else if (e === "n") { bytes.push(0x0a); i += 2; }
      else if (e === "r") { bytes.push(0x0d); i += 2; }
      else if (e === "t") { bytes.push(0x09); i += 2; }
      else if (e === "x") { bytes.push(parseInt(line.substr(i + 2, 2), 16)); i += 4; }
      else if (e === "u" && line[i + 2] === "{") {
        const end = line.indexOf("}", i);
        bytes.push(...Buffer.from(String.fromCodePoint(parseInt(line.substring(i + 3, end), 16)), "utf8"));
        i = end + 1;
      } else { throw new Error("bad escape in corpus line: " + line); }
    }
    // WHATWG decoding: every ill-formed subsequence becomes U+FFFD.
    cases.push(new TextDecoder("utf-8").decode(Buffer.from(bytes)));
  }
  return cases;
}

async function tokenize(tokenizerPath, corpusPath) {
  const { Tokenizer } = require("tokenizers");
  const tok = Tokenizer.fromFile(tokenizerPath);
  const out = [];
  for (const text of parseCorpus(corpusPath)) {
    const withSpecial = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
    const plain = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    out.push({
      ids: Array.from(plain),
      ids_special: Array.from(withSpecial),
      decoded: await tok.decode(Array.from(plain), false),
      decoded_skip_special: await tok.decode(Array.from(plain), true),
      // Decoding from the second token on: starts mid-character where the first token split one.
      decoded_tail: await tok.decode(Array.from(plain).slice(1), false),
    });
  }
  process.stdout.write(JSON.stringify(out));
}

function render(templatePath, conversationsPath) {
  const { Template } = require("@huggingface/jinja");
  const template = new Template(fs.readFileSync(templatePath, "utf8"));
  const out = [];
  for (const c of JSON.parse(fs.readFileSync(conversationsPath, "utf8"))) {
    try {
      out.push({ name: c.name, text: template.render(c.context) });
    } catch (e) {
      out.push({ name: c.name, error: String(e.message || e) });
    }
  }
  process.stdout.write(JSON.stringify(out));
}

async function bench(tokenizerPath, corpusPath, seconds) {
  const { Tokenizer } = require("tokenizers");
  const tok = Tokenizer.fromFile(tokenizerPath);
  const cases = parseCorpus(corpusPath);
  const bytes = cases.reduce((n, s) => n + Buffer.byteLength(s, "utf8"), 0);
  let rounds = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  // encodeBatch runs in Rust (RAYON_NUM_THREADS=1 keeps it on one thread), so the per-call
  // overhead of the JS binding is paid once per round, not once per line.
  while (elapsed < seconds) {
    await tok.encodeBatch(cases, { addSpecialTokens: false });
    rounds++;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  }
  process.stdout.write(JSON.stringify({ bytes_per_round: bytes, rounds, seconds: elapsed,
                                        mb_per_s: (bytes * rounds) / elapsed / 1e6 }));
}

async function decode(tokenizerPath, idsJson) {
  const { Tokenizer } = require("tokenizers");
  const tok = Tokenizer.fromFile(tokenizerPath);
  const out = [];
  for (const ids of JSON.parse(idsJson)) {
    out.push({ text: await tok.decode(ids, false), text_skip_special: await tok.decode(ids, true) });
  }
  process.stdout.write(JSON.stringify(out));
}

const [mode, a, b, c] = process.argv.slice(2);
if (mode === "tokenize") tokenize(a, b);
else if (mode === "render") render(a, b);
else if (mode === "decode") decode(a, b);
else if (mode === "bench") bench(a, b, Number(c || 2));
else { console.error("usage: oracle.js tokenize|render|bench|decode ..."); process.exit(2); }
