#!/usr/bin/env node
/**
 * Throughput of a TF.js export in Node, as one JSON line (benchmarks/portable_throughput.py
 * runs it beside the SavedModel and LiteRT):
 *
 *   node export/js/bench.mjs DIR [--batch B] [--length N] [--rounds R] [--prompt P]
 *        [--temperature T] [--seed S] [--backend cpu|wasm]
 *
 * Each round generates B rows of N new characters from the same prompt (seeded rows: every
 * round does the same work, whatever the text), and a one-character call measures the
 * time to the first character (the prompt's steps and one pick). Reported:
 * {"runtime": "tfjs-node", "backend", "batch", "length", "rounds", "load_seconds",
 *  "model_bytes", "round_seconds": [...], "chars": [...], "chars_per_second" (median round),
 *  "first_char_seconds": [...]}.
 * Errors: one line "tfchargen-js-bench: <message>", exit 1 (2 for usage).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import * as tf from '@tensorflow/tfjs';

import { TfchargenError, load, rowSeed } from './tfchargen.mjs';

const PROG = 'tfchargen-js-bench';
const USAGE = `usage: ${PROG} DIR [--batch B] [--length N] [--rounds R] [--prompt P] [--temperature T] `
  + '[--seed S] [--backend NAME]';

function fail(message, status) {
  process.stderr.write(`${PROG}: ${message}\n`);
  process.exitCode = status;
}

function parse(argv) {
  const o = { batch: 1, length: 200, rounds: 3, prompt: 'Today ', temperature: 0.8, seed: 1, backend: 'cpu' };
  const numeric = { '--batch': 'batch', '--length': 'length', '--rounds': 'rounds', '--temperature': 'temperature',
    '--seed': 'seed' };
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i].startsWith('--') ? argv[i].split(/=(.*)/s) : [argv[i]];
    if (!name.startsWith('--')) {
      if (o.dir !== undefined) throw new Error(`unexpected argument '${name}'`);
      o.dir = name;
      continue;
    }
    if (!(name in numeric) && name !== '--prompt' && name !== '--backend') throw new Error(`unknown option '${name}'`);
    const value = inline ?? argv[++i];
    if (value === undefined) throw new Error(`${name} needs a value`);
    if (name === '--prompt' || name === '--backend') {
      o[name.slice(2)] = value;
    } else {
      const x = Number(value);
      const integral = name !== '--temperature';
      if (value.trim() === '' || !Number.isFinite(x) || (integral && !Number.isSafeInteger(x))) {
        throw new Error(`${name}: expected ${integral ? 'an integer' : 'a number'}, got '${value}'`);
      }
      o[numeric[name]] = x;
    }
  }
  if (o.dir === undefined) throw new Error('missing DIR');
  if (o.batch < 1 || o.rounds < 1 || o.length < 1) throw new Error('--batch, --length and --rounds must be >= 1');
  return o;
}

async function folderBytes(dir, manifest) {
  const files = (await readdir(dir)).filter((f) => f === manifest.model_file || f.endsWith('.bin'));
  let total = 0;
  for (const f of files) total += (await stat(join(dir, f))).size;
  return total;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(argv) {
  let o;
  try {
    o = parse(argv);
  } catch (e) {
    return fail(`${e.message}; ${USAGE}`, 2);
  }
  tf.enableProdMode();
  const t0 = performance.now();
  let model;
  try {
    model = await load(o.dir, { backend: o.backend });
  } catch (e) {
    if (e instanceof TfchargenError) return fail(e.message, 1);
    throw e;
  }
  const loadSeconds = (performance.now() - t0) / 1000;
  const prompts = new Array(o.batch).fill(o.prompt);
  const controls = { temperature: o.temperature, seed: prompts.map((_, i) => rowSeed(o.seed, i)) };
  await model.generate(prompts, { ...controls, max_length: 2 }); // warm-up: first-call allocations
  const roundSeconds = [];
  const chars = [];
  const firstChar = [];
  for (let r = 0; r < o.rounds; r++) {
    let t = performance.now();
    await model.generate(prompts, { ...controls, max_length: 1 });
    firstChar.push((performance.now() - t) / 1000);
    t = performance.now();
    const out = await model.generate(prompts, { ...controls, max_length: o.length });
    roundSeconds.push((performance.now() - t) / 1000);
    chars.push(out.num_chars.reduce((a, b) => a + b, 0));
  }
  const rates = roundSeconds.map((s, i) => chars[i] / s);
  process.stdout.write(`${JSON.stringify({
    runtime: 'tfjs-node',
    backend: tf.getBackend(),
    tfjs_version: tf.version.tfjs,
    node_version: process.versions.node,
    batch: o.batch,
    length: o.length,
    rounds: o.rounds,
    load_seconds: loadSeconds,
    model_bytes: await folderBytes(o.dir, model.manifest),
    round_seconds: roundSeconds,
    chars,
    chars_per_second: median(rates),
    first_char_seconds: firstChar,
  })}\n`);
  model.dispose();
  return undefined;
}

main(process.argv.slice(2)).catch((e) => fail(String(e?.stack ?? e).replace(/\s*\n\s*/g, ' '), 1));
