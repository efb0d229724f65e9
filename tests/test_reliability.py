"""Reliability: exports and training killed at random moments, CLI errors, security.

* ``tfchargen export`` SIGKILLed before, while and after it writes: no numbered version
  directory is ever half-written or unloadable, stale ``.tmp-<pid>`` directories are ignored
  (by ``locate.versions``, the CLI and TF Serving, whose FileSystemStoragePathSource skips
  every child that does not parse as an int64) and the next exports take the next free
  versions, also when two run at once.
* ``tfchargen train`` SIGKILLed at a random moment: config.json, metrics.json and vocab.txt
  are whole (written to a temporary file, then renamed), and re-running resumes.
* Every error a user can cause is one line on stderr and exit code 2, no traceback.
* The SavedModel reads nothing but its own files, command-line paths are never run through a
  shell, the serving configs bind to localhost. (No PyFunc/EagerPyFunc ops in the graph or its
  function library: tests/test_export.py::test_graph_has_no_pyfunc_ops.)
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from helpers import DATA, ROOT, Concurrent, run_cli

from tfchargen.cli import app as cli
from tfchargen.data import sources
from tfchargen.savedmodel.locate import load_savedmodel, versions

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
RNG = random.Random(20240517)  # the kill moments are random but reproducible per run order


def tree(path):
    """Relative paths of every file under ``path``."""
    return {os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs}


def wait_for(predicate, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
    return True


def one_error_line(r, match):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("tfchargen")]
    assert len(lines) == 1 and match in lines[0], r.stderr[-2000:]
    return lines[0]


# -- interrupted export -----------------------------------------------------------------------
def export_proc(run_dir, base, log):
    return subprocess.Popen([sys.executable, "-m", "tfchargen", "export", "--run-dir", str(run_dir),
                             "--export-base", str(base), "--default-max-length", "12", "--default-temperature", "0"],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def tmp_dirs(base):
    return [d for d in os.listdir(base) if d.startswith(".tmp-")]


# The fresh-process parts of this module's slow tests run together in threads from its first
# slow test on (those on the tiny run from its first test on the tiny run); each test takes
# its part's result, and asserts what it can only check in this process.
@pytest.fixture(scope="module")
def scenarios(tmp_path_factory, data_path):
    started = Concurrent()
    started.start("training killed", _training_killed_and_resumed, tmp_path_factory.mktemp("training-killed"))
    started.start("not a savedmodel", _model_that_is_not_a_savedmodel, tmp_path_factory.mktemp("not-a-model"))
    yield started
    started.close()


@pytest.fixture(scope="module")
def scenarios_on_tiny_run(tiny_run, tiny_model, tmp_path_factory):
    started = Concurrent()
    tmp = tmp_path_factory.mktemp
    started.start("export killed", _exports_killed_at_random_moments, tiny_run, tiny_model, tmp("export-killed"))
    started.start("reads only its own files", _savedmodel_under_strace, tiny_run, tiny_model, tmp("strace"))
    started.start("malformed csv", _train_on_a_malformed_csv, tmp("malformed"))
    started.start("edited vocab", _export_of_a_run_whose_vocab_was_edited, tiny_run, tmp("edited"))
    started.start("literal paths", _evaluate_with_a_path_full_of_shell_syntax, tiny_run, tmp("literal"))
    yield started
    started.close()


@pytest.mark.slow
def test_export_killed_at_random_moments_never_leaves_a_broken_version(scenarios_on_tiny_run):
    base, top = scenarios_on_tiny_run.result("export killed")
    # The newest version loads and runs (each export also ran its version in the session-based
    # loader before renaming it); the CLI picks it, skipping the stale directories.
    loaded, path = load_savedmodel(str(base))
    assert path == str(base / str(top + 2))
    import tensorflow as tf
    assert int(loaded.signatures["score"](text=tf.constant(["Today"]))["num_chars"][0]) == 5


def _exports_killed_at_random_moments(tiny_run, tiny_model, tmp_path):
    # Shell metacharacters in the path: it must be used literally, never run through a shell.
    base = tmp_path / "models; rm -rf SENTINEL $(touch PWNED) `touch PWNED`" / "chargen"
    sentinel = tmp_path / "SENTINEL"
    sentinel.mkdir()
    shutil.copytree(tiny_model / "1", base / "1")
    whole = tree(base / "1")
    assert {"saved_model.pb", "assets/vocab.txt"} <= whole

    # Three real SIGKILLs, the exports running at once (as several exporters might): one at a
    # random moment of its whole run (0.5-8 s after its start: importing, tracing or writing),
    # one as soon as its temporary directory holds its first files (mid-write), one at a random
    # moment once its saved_model.pb is there (the session-loader check, or around the rename).
    # Meanwhile the base is polled like a model server would: every numbered directory must
    # be whole the moment it is seen.
    moments = [("random", lambda tmp: True, RNG.uniform(0.5, 8.0)),
               ("mid-write", lambda tmp: tmp.is_dir() and bool(tree(tmp)), 0.0),
               ("checking", lambda tmp: (tmp / "saved_model.pb").exists(), RNG.uniform(0.0, 3.0))]
    seen = {}

    def kill_at(name, ready, delay):
        proc = export_proc(tiny_run, base, tmp_path / f"{name}.log")
        reached = wait_for(lambda: ready(base / f".tmp-{proc.pid}"), proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen[name] = (reached, proc.returncode)

    killers = [threading.Thread(target=kill_at, args=m) for m in moments]
    for k in killers:
        k.start()
    checked = set()
    while any(k.is_alive() for k in killers):
        for v in set(versions(str(base))) - checked:
            assert tree(base / str(v)) == whole, f"version {v} was visible before it was whole"
            checked.add(v)
        time.sleep(0.005)
    for k in killers:
        k.join()
    assert len(seen) == len(moments), seen  # every killer thread got to its kill
    for v in versions(str(base)):
        assert tree(base / str(v)) == whole, f"version {v} is incomplete after the kills"
    assert any(reached for reached, _ in seen.values()), seen
    stale = tmp_dirs(base)
    assert stale, f"no kill landed while a version was being written: {seen}"  # else this test proves little

    # Stale .tmp-<pid> directories are ignored; two exports at once take the next two versions.
    top = max(versions(str(base)))
    procs = [export_proc(tiny_run, base, tmp_path / f"final{i}.log") for i in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [(tmp_path / f"final{i}.log").read_text()[-2000:]
                                                           for i in range(2)]
    assert versions(str(base))[-2:] == [top + 1, top + 2]
    assert set(stale) <= set(tmp_dirs(base))  # left alone: only the process that made one removes it
    for v in versions(str(base)):
        assert tree(base / str(v)) == whole
    assert sentinel.exists() and not list(tmp_path.rglob("PWNED"))
    return base, top


# -- interrupted training ---------------------------------------------------------------------
@pytest.mark.slow
def test_training_killed_at_a_random_moment_keeps_whole_files_and_resumes(scenarios):
    scenarios.result("training killed")


def _training_killed_and_resumed(tmp_path):
    import h5py

    run_dir = tmp_path / "run"
    args = ["train", "--run-dir", str(run_dir), "--train-data", f"csv:{DATA}[:1500]", "--units", "16",
            "--batch-size", "16", "--steps-per-epoch", "25", "--epochs", "6", "--sample-every", "0", "--seed", "5",
            "--no-export"]
    proc = subprocess.Popen([sys.executable, "-m", "tfchargen", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: (run_dir / "checkpoints" / "epoch-001.weights.h5").exists(), proc), \
        "training ended before it could be interrupted"
    time.sleep(RNG.uniform(0.0, 1.5))  # epochs take ~0.3-1 s: anywhere in epochs 1-6, epoch ends included
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # What readers use is whole at any moment (temporary file + rename).
    config = json.loads((run_dir / "config.json").read_text())
    assert config["bad_rows"] == "error" and config["units"] == 16
    done = [m["epoch"] for m in json.loads((run_dir / "metrics.json").read_text())]
    assert done == list(range(1, len(done) + 1))
    assert (run_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()[-1] == "<eos>"
    # Epoch checkpoints are written aside and renamed: every one that exists is whole; a
    # kill mid-write leaves at most a .tmp-* file, which nothing reads.
    ckpts = sorted(c for c in (run_dir / "checkpoints").iterdir() if not c.name.startswith(".tmp-"))
    assert [c.name for c in ckpts] == [f"epoch-{i:03d}.weights.h5" for i in range(1, len(ckpts) + 1)]
    for c in ckpts:
        h5py.File(c, "r").close()

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    if len(done) < 6:
        assert f"Epoch {len(done) + 1}/6" in r.stdout and "Epoch 1/6" not in r.stdout
    for c in sorted((run_dir / "checkpoints").glob("epoch-*.weights.h5")):
        h5py.File(c, "r").close()


# -- malformed CSV rows (sources.py) ----------------------------------------------------------
GOOD = '"3","Oil rises","Prices rose."\n"4","Stocks, bonds","a ""quoted"" word"\n'
BAD = {
    "wrong number of fields": ('"1","only two"\n', "expected 3 fields (label,title,description), got 2"),
    "too many fields": ('"1","a","b","c"\n', "got 4"),
    "unterminated quote": ('"2","never closed,"x"\n', "a quote is not closed"),
    "quote inside unquoted field": ('2,ab"c,d\n', "a quote is not closed"),
    "non-numeric label": ('"World","title","description"\n', "label (first field) 'World' is not a number"),
}


def csv_file(tmp_path, bad_line, name="news.csv"):
    p = tmp_path / name
    p.write_text(GOOD + "\n" + bad_line + GOOD, encoding="utf-8")  # the bad row is line 4
    return p


@pytest.mark.parametrize("kind", sorted(BAD))
def test_malformed_csv_rows_name_file_and_line(tmp_path, kind):
    line, reason = BAD[kind]
    path = csv_file(tmp_path, line)
    with pytest.raises(sources.DataError) as e:
        sources.load(f"csv:{path}")
    msg = str(e.value)
    assert "\n" not in msg and f"{path} line 4: " in msg and reason in msg and "--bad-rows skip" in msg


def test_bad_rows_skip_drops_them_and_warns_with_the_count(tmp_path, capsys):
    path = tmp_path / "mixed.csv"
    path.write_text(GOOD + "".join(line for line, _ in BAD.values()) + GOOD + "\r\n\n", encoding="utf-8")
    got = [t.decode() for t in sources.load(f"csv:{path}", bad_rows="skip").as_numpy_iterator()]
    assert got == ["Oil rises", "Stocks, bonds"] * 2  # blank lines and CRLF endings are fine
    err = capsys.readouterr().err
    assert "skipped 5 malformed rows" in err and "line 3" in err and len(err.strip().splitlines()) == 1
    # Slices count well-formed rows only.
    assert [t.decode() for t in sources.load(f"csv:{path}[1:3]", bad_rows="skip").as_numpy_iterator()] == [
        "Stocks, bonds", "Oil rises"]
    with pytest.raises(sources.DataError, match="--bad-rows must be one of"):
        sources.load(f"csv:{path}", bad_rows="ignore")


def test_invalid_utf8_and_nul_in_csv_are_data_not_errors(tmp_path):
    path = tmp_path / "bytes.csv"
    path.write_bytes(b'"1","caf\xe9 \x00 \xed\xa0\x80","d"\n')
    (got,) = list(sources.load(f"csv:{path}").as_numpy_iterator())
    assert got.startswith(b"caf")


@pytest.mark.parametrize("spec", ["csv:{data}[5:5]", "csv:{data}[7600:]", "text:{empty}", "text:{empty}[:10]",
                                  "csv:{empty}", "text:{data}[100%:]"])
def test_empty_data_is_a_clear_error(tmp_path, data_path, spec):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    spec = spec.format(data=DATA, empty=empty)
    with pytest.raises(sources.DataError, match="no examples"):
        sources.load(spec)


# -- CLI errors: one line, exit code 2 --------------------------------------------------------
def _train_on_a_malformed_csv(tmp_path):
    path = csv_file(tmp_path, BAD["non-numeric label"][0])
    return path, run_cli("train", "--run-dir", tmp_path / "run", "--train-data", f"csv:{path}", "--no-export")


@pytest.mark.slow
def test_cli_malformed_csv_in_train_and_skip_in_evaluate(scenarios_on_tiny_run, tiny_run, capsys):
    path, r = scenarios_on_tiny_run.result("malformed csv")
    line = one_error_line(r, f"{path} line 4: the label")
    assert "--bad-rows skip" in line
    assert cli.main(["evaluate", "--run-dir", str(tiny_run), "--data", f"csv:{path}", "--bad-rows", "skip"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 1 malformed row of" in err and json.loads(out.strip().splitlines()[-1])["chars"] > 0


def edited_run(tiny_run, tmp_path, edit):
    run = tmp_path / "edited"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("logs", "backup", "export"))
    edit(run)
    return run


def drop_a_vocab_line(run):
    lines = (run / "vocab.txt").read_text(encoding="utf-8").split("\n")
    (run / "vocab.txt").write_text("\n".join(lines[:5] + lines[6:]), encoding="utf-8")


@pytest.mark.slow
def test_cli_export_of_a_run_whose_vocab_was_edited(scenarios_on_tiny_run):
    r, m = scenarios_on_tiny_run.result("edited vocab")
    one_error_line(r, "its saved weights do not fit its vocab.txt and config.json")
    assert not m.exists() or versions(str(m)) == []


def _export_of_a_run_whose_vocab_was_edited(tiny_run, tmp_path):
    run = edited_run(tiny_run, tmp_path, drop_a_vocab_line)
    return run_cli("export", "--run-dir", run, "--export-base", tmp_path / "m"), tmp_path / "m"


@pytest.mark.slow
def test_cli_model_that_is_not_a_savedmodel(scenarios):
    scenarios.result("not a savedmodel")


def _model_that_is_not_a_savedmodel(tmp_path):
    bad = tmp_path / "notamodel"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes(b"garbage\x00")
    one_error_line(run_cli("generate", "--model", bad), "is not a loadable SavedModel")


def in_process(capsys, *argv):
    """cli.main in this process (the same code path as the command, without a fresh TF start)."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tfchargen")]
    return code, lines


def truncate_weights(run):
    w = run / "model.weights.h5"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def edit_units(run):
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "units": cfg["units"] * 2}))


def vocab_not_ours(run):
    (run / "vocab.txt").write_text("a\nb\n")


@pytest.mark.slow
@pytest.mark.parametrize("edit,match", [
    (drop_a_vocab_line, "do not fit its vocab.txt and config.json"),
    (edit_units, "do not fit its vocab.txt and config.json"),
    (truncate_weights, "a weights file cannot be read"),
    (lambda run: (run / "config.json").write_text('{"units": '), "is not valid JSON"),
    (vocab_not_ours, "not a tfchargen vocabulary"),
    (lambda run: (run / "config.json").unlink(), "is not a run dir"),
])
def test_cli_evaluate_a_damaged_run_dir(tiny_run, tmp_path, capsys, edit, match):
    run = edited_run(tiny_run, tmp_path, edit)
    code, lines = in_process(capsys, "evaluate", "--run-dir", run, "--data", f"csv:{DATA}[6000:6010]")
    assert code == 2 and len(lines) == 1 and match in lines[0], lines


@pytest.mark.slow
@pytest.mark.parametrize("argv,match", [
    (["evaluate", "--model", "{tmp}", "--data", f"csv:{DATA}[:5]"], "holds no model versions"),
    (["evaluate", "--model", "{tmp}/nope", "--data", f"csv:{DATA}[:5]"], "no such model directory"),
    (["evaluate", "--model", "{model}", "--version", "9", "--data", f"csv:{DATA}[:5]"], "no SavedModel at"),
    (["evaluate", "--run-dir", "{run}", "--data", "text:{tmp}/empty.txt"], "no examples"),
    (["evaluate", "--run-dir", "{run}", "--data", f"csv:{DATA}[5:5]"], "no examples"),
    (["evaluate", "--run-dir", "{run}", "--data", "text:{tmp}"], "is a directory"),
    (["evaluate", "--run-dir", "{run}", "--data", "text:{tmp}/missing.txt"], "no such file"),
    (["evaluate", "--run-dir", "{run}", "--data", "csv:{tmp}/bad.csv"], "line 1: expected 3 fields"),
    (["evaluate", "--run-dir", "{tmp}", "--data", f"csv:{DATA}[:5]"], "is not a run dir"),
    (["generate", "--model", "{model}", "--top-p", "0"], "top_p must be in (0, 1] (1 = off)"),
])
def test_cli_errors_in_process(tiny_run, tiny_model, tmp_path, capsys, argv, match):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bad.csv").write_text("just one field\n")
    argv = [a.format(tmp=tmp_path, model=tiny_model, run=tiny_run) for a in argv]
    code, lines = in_process(capsys, *argv)
    assert code == 2 and len(lines) == 1 and match in lines[0], lines


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode: 'unreadable' cannot happen")
def test_cli_unreadable_file(tmp_path, capsys, tiny_run):
    p = tmp_path / "secret.txt"
    p.write_text("Today\n")
    p.chmod(0)
    code, lines = in_process(capsys, "evaluate", "--run-dir", tiny_run, "--data", f"text:{p}")
    assert code == 2 and len(lines) == 1 and "cannot read" in lines[0]


# -- security ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_savedmodel_reads_only_its_own_files(scenarios_on_tiny_run):
    """Loads a copy of the export under strace: every file it opens outside the Python/TF
    installation and the system is inside the copy (never the run dir or its vocab.txt)."""
    scenarios_on_tiny_run.result("reads only its own files")


def _savedmodel_under_strace(tiny_run, tiny_model, tmp_path):
    strace = shutil.which("strace")
    if not strace:
        pytest.skip("strace is not installed")
    copy = tmp_path / "copy" / "1"
    shutil.copytree(tiny_model / "1", copy)
    log = tmp_path / "strace.log"
    code = ("import sys, tensorflow as tf\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "m.signatures['serving_default'](prompt=tf.constant(['Today ']))\n"
            "m.signatures['score'](text=tf.constant(['Today']))\n"
            "print('OK')\n")
    r = subprocess.run([strace, "-f", "-qq", "-s", "4096", "-e", "trace=open,openat,openat2,creat", "-o", str(log),
                        sys.executable, "-c", code, str(copy)], capture_output=True, text=True, timeout=600, env=ENV)
    if r.returncode != 0 and "ptrace" in r.stderr:
        pytest.skip(f"strace cannot trace here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stderr[-2000:]
    opened = set(re.findall(r'open(?:at2?)?\((?:[A-Z_]+, )?"([^"]+)"', log.read_text()))
    allowed = [sys.prefix, sys.base_prefix, os.path.realpath(sys.prefix), "/usr/", "/lib", "/etc/", "/proc/",
               "/sys/", "/dev/", "/opt/", "/root/.cache", os.path.expanduser("~/.keras"), str(ROOT / "tfchargen")]
    outside = sorted(p for p in opened if not any(p.startswith(a) for a in allowed) and not p.startswith(str(copy))
                     and os.path.dirname(p) != tempfile.gettempdir()  # libraries' own scratch files
                     and not p.endswith(".pyc"))
    assert not [p for p in outside if str(tiny_run) in p or str(tiny_model) in p], outside
    assert all(not os.path.isfile(p) for p in outside), outside  # at most failed opens and directories
    model_files = {"vocab.txt", "saved_model.pb", "fingerprint.pb", "variables.index"}
    assert {p for p in opened if os.path.basename(p) in model_files} == {
        str(copy / f) for f in ("assets/vocab.txt", "saved_model.pb", "fingerprint.pb", "variables/variables.index")}


@pytest.mark.slow
def test_asset_paths_are_relative_to_the_export(tiny_model, tiny_run):
    from tensorflow.core.protobuf import saved_model_pb2

    version = tiny_model / "1"
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((version / "saved_model.pb").read_bytes())
    (mg,) = sm.meta_graphs
    assets = {a.filename for a in mg.asset_file_def}
    assert assets == {"vocab.txt"} and (version / "assets" / "vocab.txt").is_file()
    # No string constant in the graph or its functions names a file outside the export. (The
    # lookup tables' shared_name embeds the training-time vocab path: a resource name only.)
    consts = [s for nodes in [mg.graph_def.node, *[f.node_def for f in mg.graph_def.library.function]]
              for n in nodes if n.op == "Const" for s in n.attr["value"].tensor.string_val]
    assert not [s for s in consts if str(tiny_run).encode() in s or s.startswith(b"/")]


@pytest.mark.slow
def test_command_line_paths_are_literal(scenarios_on_tiny_run):
    """A data path full of shell syntax is a file name like any other (run from its own
    directory, so that a shell, if one ever ran it, would create pwned* and delete keep/
    right there)."""
    scenarios_on_tiny_run.result("literal paths")


def _evaluate_with_a_path_full_of_shell_syntax(tiny_run, tmp_path):
    (tmp_path / "keep").mkdir()
    weird = tmp_path / "$(touch pwned); rm -rf keep `touch pwned2` |x& ;'\" *.txt"
    weird.write_text("Today stocks rise\nOil falls\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "tfchargen", "evaluate", "--run-dir", str(tiny_run), "--data",
                        f"text:{weird.name}"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["chars"] > 20
    assert (tmp_path / "keep").exists() and not list(tmp_path.glob("pwned*"))


def test_serving_ports_bind_to_localhost():
    compose = ROOT / "serving" / "docker-compose.yml"
    if not compose.exists():
        pytest.skip("serving/docker-compose.yml not written yet")
    ports = re.findall(r'^\s*-\s*"?([^"\s#]+:\d+:\d+)"?', compose.read_text(), flags=re.M)
    assert ports, "no port mappings found"
    for p in ports:
        host = p.rsplit(":", 2)[0]
        assert host in ("127.0.0.1", "${CHARGEN_BIND:-127.0.0.1}"), f"{p} is not bound to localhost by default"
