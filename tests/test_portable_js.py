"""The TensorFlow.js half of the portable export: the tiny run exported once with the real CLI
(`tfchargen export --format web`, which holds the tfjs export's files too) and run by a real
Node process (export/js/generate.mjs, the tfchargen.mjs library) and a real headless
chromium page served by python's http.server: the SavedModel's `generate` text byte for
byte for greedy, seeded and top-k/top-p rows, the CLI's row seeds for one --seed, the
library's filters and seeded draw against sampling.py, one-line errors; the page's
TensorFlow.js is the bytes npm installs."""

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from browser import CHROMIUM, page_generate
from helpers import IN_CI, ROOT, Background, cli_command, cli_env, run_together, skip_or_fail

from tfchargen.generation import seeds
from tfchargen.portable import tfjs, web

JS_DIR = ROOT / "export" / "js"
TFJS_PACKAGE = JS_DIR / "node_modules" / "@tensorflow" / "tfjs"
NODE = shutil.which("node")

# The prompts every Node run gives (as argv bytes): what the native clients' tests give.
PROMPTS = [
    "Today ".encode(),
    "On Sunday ".encode(),
    b"",
    "Café ☕".encode(),
    "{~} ¿§ ☃ 日本 ".encode(),  # characters the vocabulary lacks: dropped from the input, kept in `text`
    b"Broken \xff\xfe UTF-8 ",  # invalid UTF-8: U+FFFD, as the SavedModel's normalize makes it
    "Tab\tand\nline\u2028breaks ".encode(),  # control whitespace becomes spaces: still one line out
    ("Long prompt " * 12).encode(),  # rows of unequal lengths step through their prompts together
]
# name -> (generate.mjs flags, the controls every row gets; row i's seed is row_seed(seed, i))
CONFIGS = {
    "greedy": (["--temperature", "0"], dict(max_length=100, temperature=0.0, top_k=0, top_p=1.0, seed=0)),
    "seeded": (["--seed", "7"], dict(max_length=100, temperature=0.8, top_k=0, top_p=1.0, seed=7)),
    "top-k-top-p": (["--max-length", "60", "--temperature", "1.2", "--top-k", "5", "--top-p", "0.9", "--seed", "11"],
                    dict(max_length=60, temperature=1.2, top_k=5, top_p=0.9, seed=11)),
}
# One request's rows, each with its own controls (the library's per-row arrays); seeds as sent.
ROWS = [dict(prompt="Today ", max_length=50, temperature=0.0, top_k=0, top_p=1.0, seed=0),
        dict(prompt="Today ", max_length=30, temperature=0.8, top_k=0, top_p=1.0, seed=7),
        dict(prompt="On Sunday ", max_length=0, temperature=1.0, top_k=5, top_p=1.0, seed=11),
        dict(prompt="", max_length=80, temperature=1.3, top_k=0, top_p=0.9, seed=-12345),
        dict(prompt="Café ☕", max_length=40, temperature=0.5, top_k=3, top_p=0.8, seed=2**62 + 5),
        dict(prompt="Today \x1e", max_length=200, temperature=0.9, top_k=20, top_p=0.95, seed=2**63 - 1)]
# The page's rows (its seed field is the row's own seed, as `tfchargen serve`'s page sends it).
PAGE_ROWS = {"greedy": dict(prompt="On Sunday ", max_length=120, temperature=0.0, top_k=0, top_p=1.0, seed=0),
             "seeded": dict(prompt="Today ", max_length=200, temperature=0.9, top_k=20, top_p=0.95, seed=7)}
# One --seed for several prompts (a prompt given twice gets two row seeds), as in the CLI test.
CLI_FLAGS = ["--temperature", "1", "--max-length", "50", "--top-p", "0.95", "--seed", "-12345"]
CLI_PROMPTS = ["Today ", "Today ", "On Sunday ", "", "Café ☕", "Today "]

# Python's answers, in a fresh process: the SavedModel's generate for each case ({name: rows}),
# and sampling.py's seeded draw, filters and inverse_cdf on the library check's inputs.
REFERENCE = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tfchargen.generation import sampling

with open(sys.argv[2]) as f:
    job = json.load(f)
m = tf.saved_model.load(sys.argv[1])
out = {}
for name, rows in job["cases"].items():
    col = lambda k, dtype: tf.constant([r[k] for r in rows], dtype)
    r = m.signatures["generate"](prompt=tf.constant([bytes.fromhex(r["prompt_hex"]) for r in rows]),
                                 max_length=col("max_length", tf.int32), temperature=col("temperature", tf.float32),
                                 top_k=col("top_k", tf.int32), top_p=col("top_p", tf.float32),
                                 seed=col("seed", tf.int64))
    out[name] = {"text": [t.hex() for t in r["text"].numpy()], "num_chars": r["num_chars"].numpy().tolist(),
                 "ended_with_eos": r["ended_with_eos"].numpy().tolist(), "log_prob": r["log_prob"].numpy().tolist()}
d = job["draws"]
key = sampling.row_key(tf.constant([int(s) for s in d["seeds"]], tf.int64))
lp = tf.constant(np.array([[-np.inf if x is None else x for x in row] for row in d["log_probs"]], np.float32))
k = sampling.TopK()(lp, {"top_k": tf.constant(d["top_k"], tf.int32)})
p = sampling.TopP()(k, {"top_p": tf.constant(d["top_p"], tf.float32)})
scaled = p * (1.0 / tf.constant(d["temperature"], tf.float32))[:, None]
out["draws"] = {"row_key": key.numpy().tolist(),
                "uniform": sampling.seeded_uniform(key, tf.constant(d["steps"], tf.int32)).numpy().tolist(),
                "top_k": np.isfinite(k.numpy()).tolist(), "top_p": np.isfinite(p.numpy()).tolist(),
                "ids": sampling.inverse_cdf(scaled, sampling.seeded_uniform(key, tf.constant(d["steps"]))).numpy()
                .tolist()}
print(json.dumps(out))
"""

# The library from Node: its seeds, filters and draw on the same inputs, and one generate call
# with per-row controls (and an unseeded row twice).
LIBRARY = r"""
import { readFileSync } from 'node:fs';
const lib = await import(process.argv[2]);
const job = JSON.parse(readFileSync(process.argv[4], 'utf8'));
const d = job.draws;
const draws = { row_seed: job.row_seeds.map(([s, i]) => String(lib.rowSeed(BigInt(s), i))), row_key: [],
                uniform: [], top_k: [], top_p: [], ids: [] };
d.seeds.forEach((s, r) => {
  const key = lib.rowKey(BigInt(s));
  draws.row_key.push(key);
  draws.uniform.push(lib.seededUniform(key, d.steps[r]));
  const lp = Float32Array.from(d.log_probs[r], (x) => (x === null ? -Infinity : x));
  lib.topK(lp, d.top_k[r]);
  draws.top_k.push(Array.from(lp, Number.isFinite));
  lib.topP(lp, Math.fround(d.top_p[r]));
  draws.top_p.push(Array.from(lp, Number.isFinite));
  const inv = Math.fround(1 / Math.fround(d.temperature[r]));
  draws.ids.push(lib.inverseCdf(lp.map((x) => Math.fround(x * inv)), lib.seededUniform(key, d.steps[r])));
});
const model = await lib.load(process.argv[3]);
const rows = job.rows;
const pick = (k) => rows.map((r) => r[k]);
const out = await model.generate(pick('prompt'), { max_length: pick('max_length'), temperature: pick('temperature'),
  top_k: pick('top_k'), top_p: pick('top_p'), seed: pick('seed') });
const unseeded = [];
for (let i = 0; i < 2; i++) {
  unseeded.push((await model.generate(['Today '], { max_length: 100, temperature: 1.0, seed: 0 })).text[0]);
}
process.stdout.write(JSON.stringify({ draws, rows: { text: out.text, num_chars: Array.from(out.num_chars),
  ended_with_eos: out.ended_with_eos, log_prob: Array.from(out.log_prob) }, unseeded }));
"""


def _hex(text):
    return text.encode("utf-8", "surrogatepass").hex() if isinstance(text, str) else text.hex()


def _draw_inputs():
    """Random log-prob rows (with -inf padding and ties) and controls for the library check."""
    rng = np.random.default_rng(5)
    rows, vocab = 1500, 83
    logits = rng.normal(size=(rows, vocab)) * rng.uniform(0.5, 4, size=(rows, 1))
    logits[::7, 10:14] = logits[::7, 10:11]  # ties at the k-th place
    lp = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)
    lp[:, 0] = -np.inf
    s = rng.integers(-2**63, 2**63 - 1, rows, dtype=np.int64)
    s[:4] = [1, -1, 2**63 - 1, -2**63]
    return {"seeds": [str(x) for x in s], "steps": rng.integers(0, 2048, rows).tolist(),
            "log_probs": [[None if np.isinf(x) else float(x) for x in row] for row in lp],
            "top_k": rng.integers(0, 90, rows).tolist(),
            "top_p": np.where(rng.random(rows) < 0.2, 1.0, rng.uniform(0.01, 1.0, rows)).astype(np.float32).tolist(),
            "temperature": rng.uniform(0.1, 2.0, rows).astype(np.float32).tolist()}


@pytest.fixture(scope="module")
def node():
    if NODE is None:
        skip_or_fail("no node (apt-get install nodejs npm); .ci/run installs it")
    if not (TFJS_PACKAGE / "package.json").exists():
        skip_or_fail(f"{TFJS_PACKAGE} is missing: run `npm ci --prefix export/js` (.ci/run does)")
    return NODE


@pytest.fixture(scope="module")
def jobs(tiny_run, tiny_model, tmp_path_factory):
    """Started together once the tiny run exists: the web export (the CLI), the reference
    (the SavedModel and sampling.py in a fresh process) and the CLI run with one --seed."""
    tmp = tmp_path_factory.mktemp("js")
    cases = {name: [dict(c, prompt_hex=p.hex(), seed=seeds.row_seed(c["seed"], i)) for i, p in enumerate(PROMPTS)]
             for name, (_, c) in CONFIGS.items()}
    cases["rows"] = [dict(r, prompt_hex=_hex(r["prompt"])) for r in ROWS]
    cases.update({f"page {name}": [dict(r, prompt_hex=_hex(r["prompt"]))] for name, r in PAGE_ROWS.items()})
    job = {"cases": cases, "draws": _draw_inputs(), "rows": [dict(r, seed=str(r["seed"])) for r in ROWS],  # int64
           "row_seeds": [[str(s), i] for s in (5, -1, 2**63 - 1, -2**63, 123456789) for i in (0, 1, 2, 1000)]}
    (tmp / "job.json").write_text(json.dumps(job))
    started = {
        "export": Background(cli_command("export", "--run-dir", tiny_run, "--format", "web", "--out", tmp / "web"),
                             env=cli_env()),
        "reference": Background([sys.executable, "-c", REFERENCE, tiny_model / "1", tmp / "job.json"], env=cli_env()),
        "cli": Background(cli_command("generate", "--model", tiny_model, *CLI_FLAGS,
                                      *[f"--prompt={p}" for p in CLI_PROMPTS]), env=cli_env()),
    }
    yield tmp, job, started
    for j in started.values():
        j.kill()


def _done(jobs, name, timeout=600):
    r = jobs[2][name].wait(timeout)
    assert r.returncode == 0, (name, r.stderr[-3000:])
    return r


@pytest.fixture(scope="module")
def web_dir(node, jobs):
    """The tiny run's web export, written by `tfchargen export --format web` (which copies
    TensorFlow.js from export/js/node_modules: `node` skips or fails without it)."""
    r = _done(jobs, "export")
    assert "exported" in r.stdout, r.stderr
    return jobs[0] / "web"


@pytest.fixture(scope="module")
def reference(jobs):
    return json.loads(_done(jobs, "reference").stdout)


def node_run(*arg_lists, timeout=300):
    """generate.mjs once per argument list (str, bytes or paths), all at once -> CompletedProcess
    list, stdout as bytes and stderr as text."""
    procs = [subprocess.Popen([NODE, JS_DIR / "generate.mjs", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in arg_lists]
    try:
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err.decode()))
        return results
    finally:
        for p in procs:  # after a timeout: none is left running
            if p.poll() is None:
                p.kill()
                p.communicate()


def _prompt_flags(prompts):
    return [x for p in prompts for x in (b"--prompt", p)]


@pytest.mark.slow
def test_node_prints_the_savedmodel_text(node, web_dir, reference):
    """On the CPU backend (the default) and on the WASM backend (XNNPACK's kernels)."""
    backends = ("cpu", "wasm")
    runs = node_run(*[[web_dir, "--backend", b, *flags, *_prompt_flags(PROMPTS)]
                      for b in backends for flags, _ in CONFIGS.values()])
    for (backend, name), r in zip([(b, name) for b in backends for name in CONFIGS], runs):
        assert r.returncode == 0 and r.stderr == "", (backend, name, r.stderr)
        want = b"".join(bytes.fromhex(t) + b"\n" for t in reference[name]["text"])
        assert r.stdout == want, (backend, name)
    assert any(n > 0 for n in reference["greedy"]["num_chars"])


@pytest.mark.slow
def test_node_gives_rows_the_seeds_the_cli_gives(node, web_dir, jobs):
    """One --seed, several prompts: row i sends row_seed(seed, i) in both, so they print the
    same lines, and a prompt given three times gets three continuations."""
    cli = _done(jobs, "cli").stdout.encode()
    (r,) = node_run([web_dir, *CLI_FLAGS, *_prompt_flags(p.encode() for p in CLI_PROMPTS)])
    assert r.returncode == 0 and r.stdout == cli, r.stderr
    same_prompt = [line for line in cli.decode().splitlines() if line.startswith("Today ")]
    assert len(same_prompt) == 3 and len(set(same_prompt)) == 3


@pytest.mark.slow
def test_library_matches_sampling_py_and_generate_per_row(node, web_dir, jobs, reference):
    """tfchargen.mjs from a Node script: its row seeds, row keys, uniforms, top-k and top-p
    masks and inverse-CDF draws equal seeds.py's and sampling.py's on 1,500 random rows;
    one generate call whose rows each have their own controls equals the SavedModel's
    (text, num_chars, ended_with_eos; log_prob to float32 rounding); unseeded rows differ
    between calls."""
    tmp, job, _ = jobs
    script = tmp / "library.mjs"
    script.write_text(LIBRARY)
    (r,) = run_together([NODE, script, (JS_DIR / "tfchargen.mjs").as_uri(), web_dir, tmp / "job.json"], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert got["draws"]["row_seed"] == [str(seeds.row_seed(int(s), i)) for s, i in job["row_seeds"]]
    want = reference["draws"]
    assert got["draws"]["row_key"] == want["row_key"]
    assert got["draws"]["uniform"] == want["uniform"]
    assert got["draws"]["top_k"] == want["top_k"]
    assert got["draws"]["top_p"] == want["top_p"]
    assert got["draws"]["ids"] == want["ids"]
    rows, ref = got["rows"], reference["rows"]
    assert [t.encode() for t in rows["text"]] == [bytes.fromhex(t) for t in ref["text"]]
    assert rows["num_chars"] == ref["num_chars"] and rows["ended_with_eos"] == ref["ended_with_eos"]
    np.testing.assert_allclose(rows["log_prob"], ref["log_prob"], rtol=1e-4, atol=1e-4)
    assert ref["num_chars"][2] == 0 and ref["num_chars"][5] > 0  # max_length 0; a U+001E (<eos>) prompt goes on
    a, b = got["unseeded"]
    assert a.startswith("Today ") and b.startswith("Today ") and a != b


def _one_line_error(r):
    lines = r.stderr.splitlines()
    assert r.stdout == b"" and len(lines) == 1 and lines[0].startswith("tfchargen-js: "), r
    return lines[0]


@pytest.mark.slow
def test_node_errors_are_one_line(node, web_dir, version_dir, tmp_path):
    future = tmp_path / "future"
    shutil.copytree(web_dir, future)
    manifest = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps({**manifest, "sampling": "tfchargen-sampling-2"}))
    cases = [
        ([tmp_path / "missing", "--prompt", "x"], 1, "no such folder"),
        ([version_dir, "--prompt", "x"], 1, "holds no manifest.json: not a portable export"),
        ([future, "--prompt", "x"], 1, "sampling rule \"tfchargen-sampling-2\" is not supported"),
        ([web_dir, "--top-p", "2", "--prompt", "x"], 2, "top_p must be in (0, 1] (1 = off)"),
        ([web_dir, "--max-length=5000", "--prompt", "x"], 2, "max_length must be <= 2048"),
        ([web_dir, "--temperature", "-1", "--prompt", "x"], 2, "temperature must be finite and >= 0"),
        ([web_dir, "--top-k", "many", "--prompt", "x"], 2, "--top-k: expected an integer, got 'many'"),
        ([web_dir, "--seed", str(2**63), "--prompt", "x"], 2, "seed must be a 64-bit signed integer"),
        ([web_dir, "--no-such-flag", "--prompt", "x"], 2, "unknown option '--no-such-flag'"),
        ([web_dir, "--prompt"], 2, "--prompt needs a value"),
        ([web_dir], 2, "missing --prompt; usage: tfchargen-js"),
        ([], 2, "missing DIR; usage: tfchargen-js"),
    ]
    *runs, help_ = node_run(*[args for args, _, _ in cases], ["--help"])
    for (args, status, message), r in zip(cases, runs):
        line = _one_line_error(r)
        assert r.returncode == status and message in line, (args, r.returncode, line)
    assert help_.returncode == 0 and help_.stdout.startswith(b"usage: tfchargen-js ") and help_.stderr == ""


@pytest.mark.slow
def test_bench_prints_one_json_line(node, web_dir):
    (r,) = run_together([NODE, JS_DIR / "bench.mjs", web_dir, "--batch", "3", "--length", "8", "--rounds", "2"],
                        timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = json.loads(r.stdout)
    assert out["runtime"] == "tfjs-node" and out["backend"] == "cpu" and (out["batch"], out["rounds"]) == (3, 2)
    assert len(out["round_seconds"]) == 2 and all(0 < c <= 24 for c in out["chars"]) and out["chars_per_second"] > 0
    files = sorted(os.listdir(web_dir))
    assert out["model_bytes"] == sum(os.path.getsize(web_dir / f) for f in files if f.endswith((".bin", "model.json")))


@pytest.mark.slow
def test_the_graph_holds_only_ops_tfjs_runs(node, web_dir, tmp_path):
    """SUPPORTED_OPS are ops of the installed @tensorflow/tfjs-converter's op list (what its
    executor maps), and the export's graph uses no other."""
    script = tmp_path / "ops.mjs"
    script.write_text("import { readdirSync } from 'node:fs';\n"
                      "const dir = new URL(process.argv[2]);\nconst names = [];\n"
                      "for (const f of readdirSync(dir).filter((f) => f.endsWith('.js'))) {\n"
                      "  for (const op of (await import(new URL(f, dir))).json) names.push(op.tfOpName);\n}\n"
                      "process.stdout.write(JSON.stringify(names));\n")
    op_list = JS_DIR / "node_modules" / "@tensorflow" / "tfjs-converter" / "dist" / "operations" / "op_list"
    (r,) = run_together([NODE, script, op_list.as_uri() + "/"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert tfjs.SUPPORTED_OPS <= set(json.loads(r.stdout))
    topology = json.loads((web_dir / "model.json").read_text())["modelTopology"]
    assert {n["op"] for n in topology["node"]} <= tfjs.SUPPORTED_OPS


@pytest.mark.slow
def test_the_pages_tfjs_is_the_pinned_npm_package(web_dir):
    """The web export ships the bytes of the bundle package-lock.json pins, and the library itself."""
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@tensorflow/tfjs"]["version"]
    assert json.loads((JS_DIR / "package.json").read_text())["dependencies"]["@tensorflow/tfjs"] == pinned
    assert (web_dir / "tfchargen.mjs").read_bytes() == (JS_DIR / "tfchargen.mjs").read_bytes()
    assert json.loads((TFJS_PACKAGE / "package.json").read_text())["version"] == pinned
    bundle = (web_dir / web.BUNDLE).read_bytes()
    assert bundle == (TFJS_PACKAGE / "dist" / web.BUNDLE).read_bytes()
    assert b"@license" in bundle[:200]  # Apache-2.0, in the bundle's own header


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """python's static file server, its requests kept (path, status) instead of printed."""

    requests = None

    def log_request(self, code="-", size="-"):
        self.requests.append((self.path.split("?")[0], int(code)))


@pytest.fixture()
def static_server(web_dir):
    handler = type("Handler", (_Quiet,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(web_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.slow
def test_the_web_page_generates_the_savedmodel_text_in_chromium(web_dir, static_server, reference, tmp_path):
    """The web export served by python's http.server on localhost, opened in headless
    chromium: greedy and seeded rows give the SavedModel's text, and the page fetched
    nothing but its own folder's files."""
    import urllib.parse


    if CHROMIUM is None:
        skip_or_fail("no chromium installed (apt-get install -y chromium); CI=true makes this a failure")
    html = (web_dir / "index.html").read_text()
    assert "http://" not in html and "https://" not in html
    url, requests = static_server
    shot = tmp_path / "web.png"
    for name, row in PAGE_ROWS.items():
        query = urllib.parse.urlencode({**row, "run": "generate"})
        text, _, status = page_generate(f"{url}/?{query}", tmp_path / f"profile-{name}",
                                        shot if name == "seeded" else None)
        (want,) = reference[f"page {name}"]["text"]
        assert text.encode() == bytes.fromhex(want), (name, status)
        assert status.startswith(f"{reference[f'page {name}']['num_chars'][0]} characters in "), status
    served = {path for path, code in requests if code == 200}
    page_files = {"/", "/tfchargen.mjs", "/tf.fesm.min.js", "/manifest.json", "/model.json", "/group1-shard1of1.bin"}
    assert page_files <= served
    assert all(code == 200 or path == "/favicon.ico" for path, code in requests), requests
    assert shot.exists() and shot.stat().st_size > 10_000
    if os.environ.get("TFCHARGEN_SAVE_SCREENSHOT") and not IN_CI:
        shutil.copy(shot, ROOT / "docs" / "web.png")
