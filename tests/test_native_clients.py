"""The C and Go clients (export/c, export/go) against the tiny exported SavedModel: built with
their documented commands, byte-identical to Python's `generate` signature and to the CLI,
the contract's inputs and defaults, export bases, one-line errors, a signature reader that
agrees with protobuf and survives corrupted bytes, no memory leak."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import C_DIR, Background, cli_command, cli_env

from tfchargen import contract
from tfchargen.generation import seeds

pytestmark = pytest.mark.slow

PROMPTS = [
    "Today ".encode(),
    "On Sunday ".encode(),
    b"",
    "Café ☕".encode(),
    "{~} ¿§ ☃ 日本 ".encode(),  # characters the AG News vocabulary lacks: dropped from the input
    b"Broken \xff\xfe UTF-8 ",  # invalid UTF-8: U+FFFD, in `text` too
    b"--seed 5 looks like a flag ",  # after MODEL everything is a prompt
    ("Long prompt beyond the small-string buffer " * 3).encode(),
]

# (flags, generate inputs) pairs compared with Python; row i's seed is seeds.row_seed(seed, i)
GREEDY = (["--temperature", "0"], dict(max_length=100, temperature=0.0, top_k=0, top_p=1.0, seed=0))
SEEDED = (["--temperature", "0.8", "--seed", "7"], dict(max_length=100, temperature=0.8, top_k=0, top_p=1.0, seed=7))
FILTERED = (["--max-length", "60", "--temperature", "1.2", "--top-k", "5", "--top-p", "0.9", "--seed", "11"],
            dict(max_length=60, temperature=1.2, top_k=5, top_p=0.9, seed=11))
CONFIGS = {"greedy": GREEDY, "seeded": SEEDED, "top-k-top-p": FILTERED}

REFERENCE = r"""
import json, sys
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

path = sys.argv[1]
with open(sys.argv[3]) as f:
    configs = json.load(f)
m = tf.saved_model.load(path)
out = {"texts": {}}
for name, c in configs.items():
    prompts = [bytes.fromhex(h) for h in c["prompts"]]
    n = len(prompts)
    r = m.signatures["generate"](
        prompt=tf.constant(prompts, tf.string), max_length=tf.fill([n], tf.constant(c["max_length"], tf.int32)),
        temperature=tf.fill([n], tf.constant(c["temperature"], tf.float32)),
        top_k=tf.fill([n], tf.constant(c["top_k"], tf.int32)), top_p=tf.fill([n], tf.constant(c["top_p"], tf.float32)),
        seed=tf.constant(c["seeds"], tf.int64))
    out["texts"][name] = b"".join(t + b"\n" for t in r["text"].numpy()).hex()
sm = saved_model_pb2.SavedModel()
with open(path + "/saved_model.pb", "rb") as f:
    sm.ParseFromString(f.read())
meta = next(g for g in sm.meta_graphs if "serve" in g.meta_info_def.tags)
out["signatures"] = {k: {"method": s.method_name,
                         "inputs": {n: [t.name, t.dtype] for n, t in s.inputs.items()},
                         "outputs": {n: [t.name, t.dtype] for n, t in s.outputs.items()}}
                     for k, s in meta.signature_def.items()}
with open(sys.argv[2], "wb") as f:
    f.write(meta.SerializeToString())
print(json.dumps(out))
"""


def _env():
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.fixture(params=["c", "go"])
def client(request):
    return request.getfixturevalue(f"{request.param}_client")


# The CLI runs the native clients are compared with, by name: (flags, prompts). Each runs once
# for both clients, all of them at once, beside the first tests (python_runs).
PROMPT = "Café ☕ "
SEEDED_STREAM = ["--temperature", "1", "--max-length", "60", "--top-p", "0.95", "--seed", "77"]
GREEDY_LONG = ["--temperature", "0", "--max-length", "2100", "--chunk", "2048"]
CLI_PROMPTS = ["Today ", "Today ", "On Sunday ", "", "Café ☕", "Today "]
CLI_FLAGS = ["--temperature", "1", "--max-length", "50", "--top-p", "0.95", "--seed", "-12345"]
STREAM_FLAGS = {"chunk 7": [*SEEDED_STREAM, "--chunk", "7"], "chunk 32": SEEDED_STREAM, "chunk 2048": GREEDY_LONG}
CLI_RUNS = {"several prompts": (CLI_FLAGS, CLI_PROMPTS),
            **{f"stream {k}": (["--stream", *flags], [PROMPT]) for k, flags in STREAM_FLAGS.items()}}


@pytest.fixture(scope="module")
def python_runs(tiny_model, version_dir, tmp_path_factory):
    """Started together in the background at the module's first use: REFERENCE (the
    SavedModel in a fresh Python process) and every CLI run of CLI_RUNS."""
    tmp = tmp_path_factory.mktemp("meta")
    meta, configs_path = tmp / "meta_graph.pb", tmp / "configs.json"
    configs = {name: dict(c, prompts=[p.hex() for p in PROMPTS],
                          seeds=[seeds.row_seed(c["seed"], i) for i in range(len(PROMPTS))])
               for name, (_, c) in CONFIGS.items()}
    configs_path.write_text(json.dumps(configs))
    jobs = {"reference": Background([sys.executable, "-c", REFERENCE, version_dir, meta, configs_path],
                                    env=cli_env()),
            **{name: Background(cli_command("generate", "--model", tiny_model, *flags,
                                            *[f"--prompt={p}" for p in prompts]), env=cli_env())
               for name, (flags, prompts) in CLI_RUNS.items()}}
    yield jobs, meta
    for job in jobs.values():
        job.kill()


@pytest.fixture(scope="module")
def reference(python_runs):
    """Python's answers from the same SavedModel, loaded in a fresh process; plus the
    serve MetaGraphDef's signatures as protobuf itself parses them, and its bytes."""
    jobs, meta = python_runs
    r = jobs["reference"].wait(300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    out["meta_path"] = meta
    return out


@pytest.fixture(scope="module")
def cli(python_runs):
    """name -> the stdout (bytes) of CLI_RUNS' `tfchargen generate` run of that name."""
    jobs, _ = python_runs
    out = {}
    for name in CLI_RUNS:
        r = jobs[name].wait(600)
        assert r.returncode == 0, (name, r.stderr[-3000:])
        out[name] = r.stdout.encode()
    return out


def run(binary, *args, timeout=120):
    return subprocess.run([str(binary), *args], capture_output=True, timeout=timeout, env=_env())


def run_many(binary, arg_lists, timeout=180):
    """Runs the client once per argument list, all at the same time (most of a run is
    loading the model, single-threaded); returns CompletedProcess objects in order."""
    (results,) = run_many_binaries([(binary, arg_lists)], timeout)
    return results


def run_many_binaries(runs, timeout=180):
    """run_many for several (binary, argument lists) at once: a list of results per binary."""
    procs = [[(args, subprocess.Popen([str(binary), *map(os.fspath, args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=_env())) for args in arg_lists]
             for binary, arg_lists in runs]
    try:
        results = []
        for ps in procs:
            results.append([])
            for args, p in ps:
                out, err = p.communicate(timeout=timeout)
                results[-1].append(subprocess.CompletedProcess(args, p.returncode, out, err))
        return results
    finally:
        for _, p in [x for ps in procs for x in ps]:  # after a timeout: none is left running
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_same_bytes_as_python(client, version_dir, reference):
    runs = run_many(client, [[*CONFIGS[name][0], version_dir, *PROMPTS] for name in CONFIGS])
    for name, r in zip(CONFIGS, runs):
        assert r.returncode == 0, (name, r.stderr)
        assert r.stderr == b"", name  # TensorFlow's start-up logging stays off stderr
        assert r.stdout == bytes.fromhex(reference["texts"][name]), name
        lines = r.stdout.split(b"\n")
        kept = [p.decode("utf-8", "replace").encode() for p in PROMPTS]  # `text` = prompt (as UTF-8) + continuation
        assert len(lines) == len(PROMPTS) + 1 and all(line.startswith(p) for line, p in zip(lines, kept)), name


def test_same_bytes_as_the_cli(client, tiny_model, cli):
    """One --seed for several prompts: the CLI, C and Go derive the same row seeds (prompt
    i gets row_seed(seed, i)), so they print the same texts; every prompt its own draw."""
    flags, prompts = CLI_RUNS["several prompts"]
    native = run(client, *flags, str(tiny_model), *prompts)
    assert native.returncode == 0, native.stderr
    assert native.stdout == cli["several prompts"]
    same_prompt = [line for line in cli["several prompts"].decode().splitlines() if line.startswith("Today ")]
    assert len(same_prompt) == 3 and len(set(same_prompt)) == 3


def test_contract_matches_contract_py(client):
    """The client's input table (names, order, dtypes) and defaults are contract.py's."""
    r = run(client, "--print-contract")
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    printed = json.loads(r.stdout)
    assert printed["signature"] == "generate"
    assert list(printed["inputs"].items()) == list(contract.SIGNATURES["generate"][0].items())
    assert list(printed["defaults"]) == list(contract.SERVING_DEFAULTS)
    for key, value in contract.SERVING_DEFAULTS.items():
        cast = np.float32 if isinstance(value, float) else int
        assert cast(printed["defaults"][key]) == cast(value), key


def test_export_base_uses_the_newest_version(client, version_dir, tmp_path):
    """MODEL may be an export base: its numerically largest numbered directory is loaded
    (10 after 9), files and other names are not versions."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "9").symlink_to(version_dir)
    (base / "abc").mkdir()
    (base / "12").write_text("not a version")
    flags = ["--temperature", "0", "--max-length", "20"]
    from_base, from_version = run_many(client, [[*flags, base, "Today "], [*flags, version_dir, "Today "]])
    assert from_base.returncode == 0, from_base.stderr
    assert from_base.stdout == from_version.stdout and from_base.stdout.startswith(b"Today ")
    (base / "10").mkdir()  # newest, but empty: the loader's error names it
    line = _one_line_error(run(client, *flags, str(base), "Today "), client.name)
    assert "NOT_FOUND" in line and str(base / "10") in line


def _dump(binary, version_dir):
    r = run(binary, "--signature-dump", str(version_dir))
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def test_signature_reader_matches_protobuf(client, version_dir, reference):
    """The hand-written wire-format walk finds what protobuf finds (names and dtypes)."""
    dtype_names = {1: "DT_FLOAT", 3: "DT_INT32", 7: "DT_STRING", 9: "DT_INT64", 10: "DT_BOOL", 0: "DT_INVALID"}
    expected = []
    for key in sorted(reference["signatures"]):
        s = reference["signatures"][key]
        expected.append(f"signature {key} method={s['method']}")
        for kind in ("inputs", "outputs"):
            for name in sorted(s[kind]):
                tname, dtype = s[kind][name]
                expected.append(f"  {kind[:-1]:<6} {name} {dtype_names[dtype]} {tname}")
    assert _dump(client, version_dir).splitlines() == expected
    assert {"generate", "serving_default", "score"} <= set(reference["signatures"])


def test_signature_reader_survives_corrupt_bytes(c_client, reference):
    """The reader, under AddressSanitizer/UBSan, on the real MetaGraphDef and on thousands of
    truncated and bit-flipped copies: parses or reports an error, never crashes or over-reads."""
    r = subprocess.run(["make", "-C", str(C_DIR), f"PYTHON={sys.executable}", "signature_fuzz"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(C_DIR / "signature_fuzz"), str(reference["meta_path"]), "20000", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    stats = dict(kv.split("=") for kv in r.stdout.split())
    assert stats["original"] == "ok" and int(stats["signatures"]) == len(reference["signatures"])
    assert int(stats["parsed"]) + int(stats["rejected"]) == 20000 and int(stats["rejected"]) > 0


def _one_line_error(r, prefix):
    lines = r.stderr.decode("utf-8", "replace").splitlines()
    assert r.returncode != 0 and r.stdout == b"", r
    assert len(lines) == 1 and lines[0].startswith(prefix + ": "), r.stderr
    return lines[0]


def test_errors_are_one_line(client, version_dir, tmp_path):
    prefix = client.name
    missing, top_p, max_length, no_prompt, nothing, bad_int, unknown, help_ = run_many(client, [
        [tmp_path / "missing", "Today "],
        ["--top-p", "2", version_dir, "Today "],
        ["--max-length=5000", version_dir, "Today "],
        [version_dir],
        [],
        ["--top-k", "many", version_dir, "x"],
        ["--no-such-flag", version_dir, "x"],
        ["--help"],
    ])
    line = _one_line_error(missing, prefix)
    assert missing.returncode == 1 and "NOT_FOUND" in line and "missing" in line
    line = _one_line_error(top_p, prefix)
    assert top_p.returncode == 1 and "INVALID_ARGUMENT" in line and "top_p must be in (0, 1]" in line  # the graph's
    line = _one_line_error(max_length, prefix)
    assert max_length.returncode == 1 and "INVALID_ARGUMENT" in line and "max_length" in line
    assert no_prompt.returncode == 2 and "missing PROMPT; usage: " in _one_line_error(no_prompt, prefix)
    assert nothing.returncode == 2 and "usage: " in _one_line_error(nothing, prefix)
    assert bad_int.returncode == 2 and "--top-k: expected an integer" in _one_line_error(bad_int, prefix)
    assert unknown.returncode == 2 and "unknown option '--no-such-flag'" in _one_line_error(unknown, prefix)
    assert help_.returncode == 0 and help_.stdout.startswith(b"usage: " + prefix.encode()) and help_.stderr == b""


def _max_rss_kb(binary, arg_lists):
    """Peak RSS of each run (run at the same time), from wait4's rusage of exactly that child."""
    with open(os.devnull, "wb") as devnull:
        procs = [subprocess.Popen([str(binary), *args], stdout=devnull, stderr=subprocess.PIPE, env=_env())
                 for args in arg_lists]
        results = []
        for p in procs:
            err = p.stderr.read()
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            p.stderr.close()
            assert p.returncode == 0, err
            results.append((usage.ru_maxrss, err.decode()))
    return results


def test_no_leak_over_repeated_calls(client, version_dir):
    """2000 calls (1000 for Go) peak at the same RSS as a tenth of them (< 10 MB more). One
    prompt carries 36 KB of characters the model drops (cheap to run, kept in `text`), so
    a leaked input or output tensor would show: 900 calls x 36 KB = 32 MB at the least. A
    leak grows with every call and fails every attempt; a one-off step of the allocator on
    a loaded machine does not repeat, hence a second attempt before failing."""
    prompts = ["Today " + "\ue000" * 12000, "On Sunday ", "x" * 30, ""]
    flags = ["--max-length", "2", "--timing"]
    n = 2000 if client.name == "tfchargen-c" else 1000
    seen = []
    for _ in range(2):
        (small, _), (large, timing) = _max_rss_kb(client, [[*flags, "--repeat", str(k), str(version_dir), *prompts]
                                                            for k in (n // 10, n)])
        assert f"calls={n} " in timing
        seen.append((small, large))
        if large - small < 10 * 1024:
            return
    pytest.fail(f"peak RSS (KB) after {n // 10} and {n} calls, two attempts: {seen}")


def test_c_stream_prints_the_bytes_of_the_cli_stream(c_client, tiny_model, cli):
    """`tfchargen-c --stream` chains start and continue: whatever the chunk size, the bytes
    of `tfchargen generate --stream` and of one `generate` call for the same seeded request."""
    flags, prompt = SEEDED_STREAM, PROMPT
    chunks = ("1", "7", "2048")
    whole, *streams, two = run_many(c_client, [[*flags, tiny_model, prompt],
                                               *[["--stream", "--chunk", chunk, *flags, tiny_model, prompt]
                                                 for chunk in chunks],
                                               ["--stream", tiny_model, "a", "b"]])
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout == cli["stream chunk 7"] and whole.stdout.startswith(prompt.encode())
    for chunk, r in zip(chunks, streams):
        assert r.returncode == 0 and r.stderr == b"", (chunk, r.stderr)
        assert r.stdout == whole.stdout, chunk
    assert two.returncode == 2 and two.stderr.decode().startswith("tfchargen-c: --stream")


def test_go_stream_prints_the_bytes_of_the_c_and_cli_streams(go_client, c_client, tiny_model, cli):
    """`tfchargen-go --stream` chains start and continue as `tfchargen-c --stream` does: the bytes
    of the C client and of `tfchargen generate --stream`, seeded over several chunks and greedy
    past one call's 2048 characters; the same usage and graph errors, one line each."""
    prompt = PROMPT
    runs = {name: [["--stream", *flags, tiny_model, prompt]] for name, flags in STREAM_FLAGS.items()}
    bad = [["--stream", tiny_model, "a", "b"], ["--stream", "--chunk", "0", tiny_model, "a"],
           ["--stream", "--chunk=2049", tiny_model, "a"], ["--stream", "--max-length", "-1", tiny_model, "a"]]
    args = [a for name in STREAM_FLAGS for a in runs[name]] + bad
    go_runs, c_runs = run_many_binaries([(go_client, args), (c_client, args)])
    n = len(STREAM_FLAGS)
    for name, go, c in zip(STREAM_FLAGS, go_runs[:n], c_runs[:n]):  # chunks of 7, of 32 (the default), of 2048
        for r in (go, c):
            assert r.returncode == 0 and r.stderr == b"", (name, r.stderr)
        assert go.stdout == c.stdout == cli[f"stream {name}"] and go.stdout.startswith(prompt.encode()), name
    for go, c in zip(go_runs[n:], c_runs[n:]):
        assert go.returncode == c.returncode and go.stdout == c.stdout == b"", (go.args, go.stderr, c.stderr)
        line = _one_line_error(go, "tfchargen-go")
        assert line.replace("tfchargen-go", "tfchargen-c", 1) == _one_line_error(c, "tfchargen-c"), go.args
