/**
 * tfchargen in TensorFlow.js: generate text from a portable export (`tfchargen export
 * --format tfjs|web`) in Node or a browser, the same text as the SavedModel's `generate`.
 *
 *   import { load, rowSeed } from './tfchargen.mjs';
 *   const model = await load('exports/tiny-tfjs');          // a folder (Node) or a URL
 *   const out = await model.generate(['Today '], { temperature: 0.8, seed: rowSeed(7n, 0) });
 *   out.text[0];                                            // 'Today ...'
 *
 * The export holds manifest.json (vocabulary, ids, limits, the sampling rule's name) and a
 * TF.js graph model of one step: step(ids [B], states) -> (log_probs [B, V], states). This
 * module is the host loop "tfchargen-sampling-1" (docs/other-languages.md): the prompt's
 * characters are looked up, stepped through from zero states, and each new character is
 * picked per row with temperature, top-k, top-p and the SavedModel's counter-based seeded
 * draw (tfchargen/generation/sampling.py), in float32 (Math.fround after every operation)
 * and uint32 (Math.imul, >>> 0) as there. Seeds are int64: pass a BigInt (or a decimal
 * string, or a safe integer).
 *
 * In a browser the page maps '@tensorflow/tfjs' to the bundle with an import map (the web
 * export's index.html does). The CPU backend is used unless `backend` says otherwise: the
 * WebGL backend computes in lower precision on some GPUs, and the same text is the point.
 */
// @tensorflow/tfjs is imported by the first load(): seeds, filters and controls cost nothing
// to import (a command can refuse bad flags before TensorFlow.js starts).
let tf;

export const SAMPLING = 'tfchargen-sampling-1';
export const FORMAT = 'tfchargen-portable';
export const FORMAT_VERSION = 1;
/** tfchargen/contract.py SERVING_DEFAULTS: what a control left out means. */
export const DEFAULTS = Object.freeze({ max_length: 100, temperature: 0.8, top_k: 0, top_p: 1.0, seed: 0n });
/** tfchargen/contract.py's messages for controls out of range, checked in this order. */
export const MESSAGES = Object.freeze({
  one_per_prompt: '{name} must have one value per prompt',
  max_length_low: 'max_length must be >= 0',
  max_length_high: 'max_length must be <= {max}',
  temperature: 'temperature must be finite and >= 0 (0 = greedy)',
  top_k: 'top_k must be >= 0 (0 = off)',
  top_p: 'top_p must be in (0, 1] (1 = off)',
});

/** An export folder that cannot be used, or controls out of range: `message` is one line. */
export class TfchargenError extends Error {
  constructor(message) {
    super(message);
    this.name = 'TfchargenError';
  }
}

const f32 = Math.fround;
const GOLDEN32 = 0x9e3779b9; // sampling._GOLDEN
const U24 = 2 ** -24;
const MASK64 = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

// -- seeds: tfchargen/generation/seeds.py row_seed (splitmix64 on unsigned 64-bit integers) --------

/** An int64 seed from a BigInt, a safe integer or a decimal string; TfchargenError otherwise. */
export function toSeed(value) {
  let s;
  if (typeof value === 'bigint') s = value;
  else if (typeof value === 'number' && Number.isSafeInteger(value)) s = BigInt(value);
  else if (typeof value === 'string' && /^\s*[-+]?\d+\s*$/.test(value)) s = BigInt(value.trim());
  else throw new TfchargenError(`seed must be a 64-bit signed integer, got ${String(value)}`);
  if (s < INT64_MIN || s > INT64_MAX) throw new TfchargenError(`seed must be a 64-bit signed integer, got ${s}`);
  return s;
}

/**
 * The seed row `index` of a request made with `userSeed` sends (seeds.row_seed): the rule
 * `tfchargen generate --seed`, tfchargen-c and tfchargen-go share, so the same --seed gives
 * every row the same draws in each. index = prompt position (one sample per prompt).
 */
export function rowSeed(userSeed, index) {
  const u = toSeed(userSeed);
  if (u === 0n) return 0n;
  let z = (BigInt.asUintN(64, u) + BigInt(index + 1) * 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  z ^= z >> 31n;
  z &= INT64_MAX;
  return z === 0n ? 1n : z;
}

// -- the seeded draw: sampling.py's _mix32, row_key, seeded_uniform, inverse_cdf -------------------

function mix32(x) {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** uint32: a row's int64 seed (both 32-bit words) mixed once (sampling.row_key). */
export function rowKey(seed) {
  const bits = BigInt.asUintN(64, toSeed(seed));
  const low = Number(bits & 0xffffffffn) >>> 0;
  const high = Number(bits >> 32n) >>> 0;
  return mix32((low ^ mix32((high + GOLDEN32) >>> 0)) >>> 0);
}

/** float32 in (0, 1], a multiple of 2**-24: the row's uniform at `step` (sampling.seeded_uniform). */
export function seededUniform(key, step) {
  const x = mix32((key + Math.imul(step >>> 0, GOLDEN32)) >>> 0);
  return f32(((x >>> 8) + 1) * U24);
}

/**
 * The first id whose cumulative probability reaches `u` under unnormalized log-probs
 * `scaled` (a Float32Array, -Infinity = excluded): sampling.inverse_cdf for one row.
 */
export function inverseCdf(scaled, u) {
  const v = scaled.length;
  let max = -Infinity;
  let argmax = 0;
  for (let j = 0; j < v; j++) if (scaled[j] > max) { max = scaled[j]; argmax = j; }
  const mass = new Float32Array(v);
  const cdf = new Float32Array(v);
  let sum = 0;
  for (let j = 0; j < v; j++) {
    mass[j] = f32(Math.exp(f32(scaled[j] - max)));
    sum = f32(sum + mass[j]);
    cdf[j] = sum;
  }
  const target = f32(u * cdf[v - 1]);
  let below = 0;
  for (let j = 0; j < v; j++) if (cdf[j] < target) below++;
  const id = Math.min(below, v - 1);
  return mass[id] > 0 ? id : argmax; // a cumsum whose rounding is not monotone: the likeliest
}

// -- filters: sampling.TopK and sampling.TopP for one row ------------------------------------------

function sortedDesc(x) {
  return Float32Array.from(x).sort().reverse(); // typed arrays sort numerically; -Infinity last after reverse
}

/** Keeps the k likeliest (ties with the k-th kept); k <= 0 keeps all. In place. */
export function topK(logProbs, k) {
  if (k <= 0) return logProbs;
  const kth = sortedDesc(logProbs)[Math.min(k, logProbs.length) - 1];
  for (let j = 0; j < logProbs.length; j++) if (!(logProbs[j] >= kth)) logProbs[j] = -Infinity;
  return logProbs;
}

/** Nucleus: keeps the likeliest characters while the mass before them is below p (renormalized
 * over what earlier filters kept); p >= 1 keeps all. In place. */
export function topP(logProbs, p) {
  if (p >= 1) return logProbs;
  const s = sortedDesc(logProbs);
  const max = s[0];
  const e = new Float32Array(s.length);
  let sum = 0;
  for (let j = 0; j < s.length; j++) {
    e[j] = f32(Math.exp(f32(s[j] - max)));
    sum = f32(sum + e[j]);
  }
  let before = 0;
  let threshold = Infinity;
  for (let j = 0; j < s.length; j++) {
    if (before < p && s[j] < threshold) threshold = s[j];
    before = f32(before + f32(e[j] / sum));
  }
  for (let j = 0; j < logProbs.length; j++) if (!(logProbs[j] >= threshold)) logProbs[j] = -Infinity;
  return logProbs;
}

// -- strings <-> ids (tfchargen/data/vocab.py's rules, from the manifest) --------------------------

/** The manifest's vocabulary and text rules. */
export class Vocab {
  constructor(manifest) {
    this.entries = manifest.vocabulary;
    this.padId = manifest.pad_id;
    this.eosId = manifest.eos_id;
    this.separator = manifest.segment_separator;
    this.maxPromptChars = manifest.max_prompt_chars;
    this.spaceLike = new Set(manifest.space_like);
    this.ids = new Map();
    this.entries.forEach((c, i) => {
      // Only single characters are looked up: "<pad>" and "<eos>" never match one.
      if (i !== this.padId && i !== this.eosId && [...c].length === 1) this.ids.set(c, i);
    });
  }

  get size() {
    return this.entries.length;
  }

  /** Lone surrogates (what invalid UTF-8 cannot reach in a JS string) -> U+FFFD; space-like -> ' '. */
  normalize(text) {
    const wellFormed = typeof text.toWellFormed === 'function' ? text.toWellFormed()
      : text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
    let out = '';
    for (const c of wellFormed) out += this.spaceLike.has(c) ? ' ' : c;
    return out;
  }

  /** Ids of a normalized text by code point: U+001E -> <eos>, unknown characters dropped. */
  encode(normalized) {
    const ids = [];
    for (const c of normalized) {
      if (c === this.separator) ids.push(this.eosId);
      else if (this.ids.has(c)) ids.push(this.ids.get(c));
    }
    return ids;
  }

  /** The model's view of a prompt: its last max_prompt_chars ids; an empty one is [<eos>]. */
  promptIds(normalized) {
    const ids = this.encode(normalized).slice(-this.maxPromptChars);
    return ids.length ? ids : [this.eosId];
  }

  /** pad and <eos> decode to nothing. */
  decode(ids) {
    let out = '';
    for (const i of ids) if (i > this.padId && i < this.eosId) out += this.entries[i];
    return out;
  }
}

// -- controls --------------------------------------------------------------------------------------

/** Per row controls: each a scalar (every row) or an array (one per prompt); defaults filled in. */
export function resolveControls(controls, n, maxNewChars = 2048) {
  const rows = {};
  for (const name of Object.keys(DEFAULTS)) {
    const given = controls?.[name];
    const value = given ?? DEFAULTS[name];
    if (Array.isArray(value) || ArrayBuffer.isView(value)) {
      if (value.length !== n) throw new TfchargenError(MESSAGES.one_per_prompt.replace('{name}', name));
      rows[name] = Array.from(value);
    } else {
      rows[name] = new Array(n).fill(value);
    }
  }
  rows.seed = rows.seed.map(toSeed);
  for (const name of ['max_length', 'top_k']) {
    for (const x of rows[name]) {
      if (!Number.isInteger(x)) throw new TfchargenError(`${name} must be an integer, got ${x}`);
    }
  }
  const problem = (rows.max_length.some((x) => x < 0) && MESSAGES.max_length_low)
    || (rows.max_length.some((x) => x > maxNewChars) && MESSAGES.max_length_high.replace('{max}', maxNewChars))
    || (rows.temperature.some((x) => !(Number.isFinite(x) && x >= 0)) && MESSAGES.temperature)
    || (rows.top_k.some((x) => x < 0) && MESSAGES.top_k)
    || (rows.top_p.some((x) => !(x > 0 && x <= 1)) && MESSAGES.top_p);
  if (problem) throw new TfchargenError(problem);
  return rows;
}

// -- loading ---------------------------------------------------------------------------------------

const IS_NODE = typeof process !== 'undefined' && !!process.versions?.node && typeof window === 'undefined';

function join(base, name) {
  if (base instanceof URL) return new URL(name, base.href.endsWith('/') ? base : `${base.href}/`);
  return base.endsWith('/') ? base + name : `${base}/${name}`;
}

/** A Node IOHandler for a graph model in a folder (pure @tensorflow/tfjs has none for files). */
async function nodeFolderHandler(dir, modelFile) {
  const { readFile } = await import('node:fs/promises');
  const path = await import('node:path');
  return {
    async load() {
      const modelJson = JSON.parse(await readFile(path.join(dir, modelFile), 'utf8'));
      const buffers = [];
      const weightSpecs = [];
      for (const group of modelJson.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) buffers.push(await readFile(path.join(dir, p)));
      }
      const total = Buffer.concat(buffers);
      const weightData = total.buffer.slice(total.byteOffset, total.byteOffset + total.byteLength);
      return { ...modelJson, weightSpecs, weightData };
    },
  };
}

async function readManifest(source) {
  const where = String(source);
  let text;
  if (IS_NODE && !/^https?:/.test(where)) {
    const { readFile, stat } = await import('node:fs/promises');
    const path = await import('node:path');
    const dir = source instanceof URL ? (await import('node:url')).fileURLToPath(source) : source;
    try {
      if (!(await stat(dir)).isDirectory()) throw new TfchargenError(`${where} is not a folder`);
    } catch (e) {
      if (e instanceof TfchargenError) throw e;
      throw new TfchargenError(`${where}: no such folder`);
    }
    try {
      text = await readFile(path.join(dir, 'manifest.json'), 'utf8');
    } catch {
      throw new TfchargenError(`${where} holds no manifest.json: not a portable export `
        + '(`tfchargen export --format tfjs --out DIR` writes one)');
    }
  } else {
    const r = await fetch(join(source, 'manifest.json'));
    if (!r.ok) throw new TfchargenError(`${join(source, 'manifest.json')}: HTTP ${r.status}`);
    text = await r.text();
  }
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new TfchargenError(`${where}/manifest.json: not a readable manifest (${e.message})`);
  }
  if (!m || m.format !== FORMAT) throw new TfchargenError(`${where}/manifest.json: not a ${FORMAT} manifest`);
  if (m.format_version !== FORMAT_VERSION) {
    throw new TfchargenError(`${where}/manifest.json: format_version ${JSON.stringify(m.format_version)} is not `
      + `supported (this tfchargen.mjs reads ${FORMAT_VERSION}); export the model again`);
  }
  if (m.sampling !== SAMPLING) {
    throw new TfchargenError(`${where}/manifest.json: sampling rule ${JSON.stringify(m.sampling)} is not `
      + `supported (this tfchargen.mjs implements ${SAMPLING})`);
  }
  if (m.runtime !== 'tfjs' && m.runtime !== 'web') {
    throw new TfchargenError(`${where} is a ${m.runtime} export; TensorFlow.js needs one written with `
      + '`tfchargen export --format tfjs` (or web)');
  }
  return m;
}

/** Registers @tensorflow/tfjs-backend-wasm (in Node, its .wasm files from node_modules). */
async function registerWasm() {
  let wasm;
  try {
    wasm = await import('@tensorflow/tfjs-backend-wasm');
  } catch (e) {
    throw new TfchargenError(`the wasm backend is not available here (${e.message})`);
  }
  if (IS_NODE) {
    const { createRequire } = await import('node:module');
    const path = await import('node:path');
    const main = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm');
    wasm.setWasmPaths(`${path.dirname(main)}${path.sep}`);
  }
}

/**
 * Loads a portable export: `source` is a folder path (Node) or a URL (a browser, or http(s)
 * in Node). Options: `backend` ('cpu' by default; 'wasm' loads @tensorflow/tfjs-backend-wasm
 * where it is installed; any registered TF.js backend).
 * Resolves to a Model; rejects with a TfchargenError for a folder that is not a TF.js export.
 */
export async function load(source, { backend = 'cpu' } = {}) {
  tf ??= await import('@tensorflow/tfjs');
  if (backend === 'wasm' && !tf.findBackend('wasm')) await registerWasm();
  if (tf.getBackend() !== backend && !(await tf.setBackend(backend))) {
    throw new TfchargenError(`TensorFlow.js backend '${backend}' could not be initialized`);
  }
  await tf.ready();
  const manifest = await readManifest(source);
  const local = IS_NODE && !/^https?:/.test(String(source));
  let graph;
  try {
    graph = local
      ? await tf.loadGraphModel(await nodeFolderHandler(source instanceof URL
        ? (await import('node:url')).fileURLToPath(source) : source, manifest.model_file))
      : await tf.loadGraphModel(String(join(source, manifest.model_file)));
  } catch (e) {
    throw new TfchargenError(`${source}: cannot load ${manifest.model_file} (${e.message})`);
  }
  return new Model(manifest, graph);
}

// -- the loop --------------------------------------------------------------------------------------

/** A loaded export: `generate` and `step`. Call `dispose()` to free its weights. */
export class Model {
  constructor(manifest, graph) {
    this.manifest = manifest;
    this.graph = graph;
    this.vocab = new Vocab(manifest);
    this.inputNames = manifest.signatures.step.inputs;
    this.outputNames = manifest.signatures.step.outputs;
  }

  /** Zero states for `batch` rows: a list of tf.Tensor [batch, units]. */
  zeroStates(batch) {
    return this.manifest.states.map((shape) => tf.zeros([batch, ...shape]));
  }

  /** One step: ids (Int32Array or array, [B]) and states -> { logProbs: tf.Tensor [B, V], states }.
   * The caller disposes the tensors it gets (and those it passed, once unneeded). */
  step(ids, states) {
    const idsTensor = tf.tensor1d(Int32Array.from(ids), 'int32');
    const feeds = { [this.inputNames[0]]: idsTensor };
    states.forEach((s, i) => { feeds[this.inputNames[i + 1]] = s; });
    const [logProbs, ...next] = this.graph.execute(feeds, this.outputNames);
    idsTensor.dispose();
    return { logProbs, states: next };
  }

  /** Steps each row over its ids from zero states -> { logProbs: Float32Array [B * V], states }:
   * rows shorter than the longest keep their log-probs and states once their ids end. */
  prefill(idLists) {
    const n = idLists.length;
    const v = this.vocab.size;
    const longest = Math.max(...idLists.map((ids) => ids.length));
    let states = this.zeroStates(n);
    const logProbs = new Float32Array(n * v);
    for (let t = 0; t < longest; t++) {
      const live = idLists.map((ids) => t < ids.length);
      const out = this.step(idLists.map((ids) => (t < ids.length ? ids[t] : 0)), states);
      const lp = out.logProbs.dataSync();
      live.forEach((on, r) => { if (on) logProbs.set(lp.subarray(r * v, (r + 1) * v), r * v); });
      let next = out.states;
      if (!live.every(Boolean)) {
        const mask = tf.tensor2d(live.map(Number), [n, 1], 'bool');
        next = tf.tidy(() => out.states.map((s, i) => tf.where(mask, s, states[i])));
        mask.dispose();
        tf.dispose(out.states);
      }
      tf.dispose([out.logProbs, ...states]);
      states = next;
    }
    return { logProbs, states };
  }

  /**
   * The SavedModel's `generate` for `prompts` (strings), one row each, with per-row
   * `controls` ({max_length, temperature, top_k, top_p, seed}: scalars or one value per
   * prompt; contract.py's defaults). Unseeded sampled rows (seed 0) draw fresh randomness.
   * -> { text, continuation: string[], num_chars: Int32Array, ended_with_eos: boolean[],
   *      log_prob: Float32Array }. Throws TfchargenError for controls out of range.
   */
  async generate(prompts, controls = {}) {
    const n = prompts.length;
    const rows = resolveControls(controls, n, this.manifest.max_new_chars);
    const vocab = this.vocab;
    const v = vocab.size;
    const normalized = prompts.map((p) => vocab.normalize(String(p)));
    if (n === 0) return outputs(vocab, [], [], new Float32Array(0));
    let { logProbs, states } = this.prefill(normalized.map((t) => vocab.promptIds(t)));
    const temperature = rows.temperature.map(f32);
    const invTemperature = temperature.map((t) => (t > 0 ? f32(1 / t) : 1));
    const keys = rows.seed.map((s) => (s !== 0n ? rowKey(s) : 0));
    const nucleus = rows.top_p.map(f32);
    const done = rows.max_length.map((m) => m <= 0);
    const steps = Math.min(Math.max(0, ...rows.max_length), this.manifest.max_new_chars);
    const newIds = Array.from({ length: n }, () => []);
    const logProb = new Float32Array(n);
    const allowed = new Float32Array(v);
    for (let i = 0; i < steps && !done.every(Boolean); i++) {
      const next = new Int32Array(n);
      for (let r = 0; r < n; r++) {
        if (done[r]) continue;
        const lp = logProbs.subarray(r * v, (r + 1) * v);
        allowed.set(lp);
        allowed[vocab.padId] = -Infinity; // padding is never a candidate
        let id;
        if (temperature[r] > 0) {
          topP(topK(allowed, rows.top_k[r]), nucleus[r]);
          for (let j = 0; j < v; j++) allowed[j] = f32(allowed[j] * invTemperature[r]);
          const u = rows.seed[r] !== 0n ? seededUniform(keys[r], i) : freshUniform();
          id = inverseCdf(allowed, u);
        } else {
          id = argmax(allowed);
        }
        next[r] = id;
        logProb[r] = f32(logProb[r] + lp[id]);
        newIds[r].push(id);
        if (id === vocab.eosId || i + 1 >= rows.max_length[r]) done[r] = true;
      }
      if (done.every(Boolean)) break;
      const out = this.step(next, states);
      tf.dispose(states);
      states = out.states;
      logProbs = out.logProbs.dataSync();
      out.logProbs.dispose();
      await tick(i);
    }
    tf.dispose(states);
    return outputs(vocab, normalized, newIds, logProb);
  }

  dispose() {
    this.graph.dispose();
  }
}

function argmax(x) {
  let best = 0;
  for (let j = 1; j < x.length; j++) if (x[j] > x[best]) best = j; // the first among ties
  return best;
}

// Node 18 has Web Crypto as node:crypto's webcrypto only; browsers and later Node as a global.
const webcrypto = globalThis.crypto ?? (IS_NODE ? (await import('node:crypto')).webcrypto : undefined);

/** 24 fresh random bits as seededUniform spreads them: for unseeded rows. */
function freshUniform() {
  const word = new Uint32Array(1);
  webcrypto.getRandomValues(word);
  return f32(((word[0] >>> 8) + 1) * U24);
}

/** Lets a page repaint during a long generation (a macrotask every 64 steps); a no-op in Node. */
function tick(i) {
  if (IS_NODE || i % 64 !== 63) return undefined;
  return new Promise((resolve) => { setTimeout(resolve, 0); });
}

function outputs(vocab, normalized, newIds, logProb) {
  const continuation = newIds.map((ids) => vocab.decode(ids));
  return {
    text: normalized.map((t, r) => t + continuation[r]),
    continuation,
    num_chars: Int32Array.from(newIds, (ids) => ids.filter((i) => i > vocab.padId && i !== vocab.eosId).length),
    ended_with_eos: newIds.map((ids) => ids.includes(vocab.eosId)),
    log_prob: logProb,
  };
}
