#!/usr/bin/env node
/**
 * tfchargen-js: generates text from a TF.js portable export in Node, one line per prompt
 * (the `text` output: the normalized prompt and its continuation), as tfchargen-c does.
 *
 *   node export/js/generate.mjs DIR --prompt P [--prompt P2 ...] [--max-length N]
 *        [--temperature T] [--top-k K] [--top-p P] [--seed S] [--backend cpu|wasm]
 *
 * DIR is a folder `tfchargen export --format tfjs` (or web) wrote. Defaults are
 * tfchargen/contract.py's SERVING_DEFAULTS; prompt i's seed is rowSeed(--seed, i), as for
 * `tfchargen generate --seed` and tfchargen-c, so the three print the same texts. Any error:
 * one line "tfchargen-js: <message>" on stderr, exit status 1 (2 for usage errors).
 */
import { DEFAULTS, TfchargenError, load, resolveControls, rowSeed, toSeed } from './tfchargen.mjs';

const PROG = 'tfchargen-js';
const USAGE = `usage: ${PROG} DIR --prompt P [--prompt P ...] [--max-length N] [--temperature T] `
  + '[--top-k K] [--top-p P] [--seed S] [--backend NAME]';

class UsageError extends Error {}

const INTEGER = /^\s*[-+]?\d+\s*$/;

function integer(flag, text) {
  if (!INTEGER.test(text)) throw new UsageError(`${flag}: expected an integer, got '${text}'`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new UsageError(`${flag}: ${text} is out of range`);
  return value;
}

function float(flag, text) {
  const value = Number(text);
  if (text.trim() === '' || Number.isNaN(value)) throw new UsageError(`${flag}: expected a number, got '${text}'`);
  return value;
}

const FLAGS = {
  '--max-length': ['max_length', integer],
  '--temperature': ['temperature', float],
  '--top-k': ['top_k', integer],
  '--top-p': ['top_p', float],
  '--seed': ['seed', (flag, text) => {
    if (!INTEGER.test(text)) throw new UsageError(`${flag}: expected an integer, got '${text}'`);
    try {
      return toSeed(text);
    } catch (e) {
      throw new UsageError(`${flag}: ${e.message}`);
    }
  }],
  '--backend': ['backend', (flag, text) => text],
  '--prompt': ['prompt', (flag, text) => text],
};

/** argv (after `node generate.mjs`) -> { dir, prompts, controls, backend } or { help: true }. */
function parseArgs(argv, flags = FLAGS) {
  const out = { dir: undefined, prompts: [], controls: {}, backend: 'cpu' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') return { help: true };
    if (!a.startsWith('--')) {
      if (out.dir !== undefined) throw new UsageError(`unexpected argument '${a}' (each prompt takes --prompt)`);
      out.dir = a;
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (!(name in flags)) throw new UsageError(`unknown option '${a}'`);
    let value;
    if (eq > 0) value = a.slice(eq + 1);
    else if (i + 1 < argv.length) value = argv[++i];
    else throw new UsageError(`${name} needs a value`);
    const [key, parse] = flags[name];
    const parsed = parse(name, value);
    if (key === 'prompt') out.prompts.push(parsed);
    else if (key === 'backend') out.backend = parsed;
    else out.controls[key] = parsed;
  }
  if (out.dir === undefined) throw new UsageError('missing DIR');
  if (!out.prompts.length) throw new UsageError('missing --prompt');
  return out;
}

/** One line on stderr: whitespace runs that hold a line break fold into one space. */
function fail(message, status) {
  process.stderr.write(`${PROG}: ${String(message).replace(/\s*[\r\n\t]\s*/g, ' ').trim()}\n`);
  process.exitCode = status;
}

async function main(argv) {
  let args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) return fail(`${e.message}; ${USAGE}`, 2);
    throw e;
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return undefined;
  }
  const seed = args.controls.seed ?? DEFAULTS.seed;
  const controls = { ...args.controls, seed: args.prompts.map((_, i) => rowSeed(seed, i)) };
  try {
    resolveControls(controls, args.prompts.length); // out of range: the caller's to fix, before any loading
  } catch (e) {
    if (e instanceof TfchargenError) return fail(`${e.message}; ${USAGE}`, 2);
    throw e;
  }
  (await import('@tensorflow/tfjs')).enableProdMode(); // no "install tfjs-node" notice: errors stay one line
  let model;
  try {
    model = await load(args.dir, { backend: args.backend });
    const out = await model.generate(args.prompts, controls);
    process.stdout.write(out.text.map((t) => `${t}\n`).join(''));
  } catch (e) {
    if (e instanceof TfchargenError) return fail(e.message, 1);
    throw e;
  } finally {
    model?.dispose();
  }
  return undefined;
}

main(process.argv.slice(2)).catch((e) => fail(e?.stack ?? e, 1));
