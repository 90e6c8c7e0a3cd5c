#!/usr/bin/env node
// The official `openai` npm client against an afd serve endpoint, unmodified; prints one JSON
// document of what it received:
//   node client.js complete URL PARAMS_JSON      completions.create (not streamed)
//   node client.js stream URL PARAMS_JSON        completions.create, stream: true
//   node client.js chat URL PARAMS_JSON          chat.completions.create (streamed when PARAMS say so)
//   node client.js concurrent URL N PARAMS_JSON  N streamed completions at once
//   node client.js abort URL PARAMS_JSON         a streamed completion dropped after its first token
"use strict";
const OpenAI = require("openai");

const [command, url, ...rest] = process.argv.slice(2);
const client = new OpenAI({ baseURL: url + "/v1", apiKey: "unused", maxRetries: 0, timeout: 120000 });

// Chunks of a stream, and what they add up to.
async function collect(stream, chat) {
  const out = { chunks: 0, text: "", token_ids: [], finish_reason: null, usage: null, ids: new Set() };
  for await (const chunk of stream) {
    out.chunks += 1;
    out.ids.add(chunk.id);
    if (chunk.usage) out.usage = chunk.usage;
    for (const choice of chunk.choices) {
      out.text += chat ? (choice.delta.content || "") : choice.text;
      if (choice.token_ids) out.token_ids.push(...choice.token_ids);
      if (choice.finish_reason) out.finish_reason = choice.finish_reason;
    }
  }
  out.ids = [...out.ids];
  return out;
}

async function main() {
  if (command === "complete") {
    return await client.completions.create(JSON.parse(rest[0]));
  }
  if (command === "stream") {
    return await collect(await client.completions.create({ ...JSON.parse(rest[0]), stream: true }), false);
  }
  if (command === "chat") {
    const params = JSON.parse(rest[0]);
    const r = await client.chat.completions.create(params);
    return params.stream ? await collect(r, true) : r;
  }
  if (command === "concurrent") {
    const n = Number(rest[0]);
    const params = { ...JSON.parse(rest[1]), stream: true };
    const jobs = [];
    for (let i = 0; i < n; i++) jobs.push(client.completions.create(params).then((s) => collect(s, false)));
    return await Promise.all(jobs);
  }
  if (command === "abort") {
    const stream = await client.completions.create({ ...JSON.parse(rest[0]), stream: true });
    let tokens = 0;
    for await (const chunk of stream) {
      tokens += chunk.choices.length ? (chunk.choices[0].token_ids || []).length : 0;
      if (tokens > 0) break;  // leaving the loop aborts the HTTP request
    }
    return { tokens };
  }
  throw new Error("unknown command " + command);
}

main().then(
  (r) => process.stdout.write(JSON.stringify(r) + "\n"),
  (e) => {
    process.stdout.write(JSON.stringify({ error: String(e), status: e.status === undefined ? null : e.status }) + "\n");
    process.exit(0);
  });
