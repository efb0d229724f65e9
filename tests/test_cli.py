"""The command line: errors in one documented line, --version, values refused before anything
loads, complete help; quiet start-up and lazy imports in fresh processes (slow)."""

import os
import sys

import pytest
from helpers import HELDOUT, ROOT, Concurrent, run_together

import tfchargen
from tfchargen import config, contract
from tfchargen.cli import app as cli
from tfchargen.config import DEFAULTS
from tfchargen.contract import SERVING_DEFAULTS


def errors(capsys, *argv):
    """(exit code, stderr lines) of cli.main in this process."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err.splitlines()


def flat(text):
    return " ".join(text.split())  # argparse wraps help lines anywhere


def help_text(capsys, *command):
    assert cli.main([*command, "--help"]) == 0
    return flat(capsys.readouterr().out)


# -- fast: argument errors, --version, help -----------------------------------------------------
@pytest.mark.parametrize("argv,prefix,message", [
    (["generate", "--model", "m", "--bogus"], "generate", "unrecognized arguments: --bogus"),
    (["--bogus", "generate", "--model", "m"], "generate", "unrecognized arguments: --bogus"),
    (["generate", "--model", "m", "--num-samples", "0"], "generate", "argument --num-samples: must be >= 1"),
    (["generate", "--model", "m", "--temperatures", "0.3,abc"], "generate", "argument --temperatures: 'abc'"),
    (["generate", "--model", "m", "--temperature", "1", "--temperatures", "0.3"], "generate",
     "argument --temperatures: not allowed with argument --temperature"),
    (["generate", "--model", "m", "--max-length", contract.MAX_NEW_CHARS + 1], "generate",
     f"argument --max-length: {contract.MSG_MAX_LENGTH_HIGH}"),
    (["generate", "--model", "m", "--max-length", "-1"], "generate",
     f"argument --max-length: {contract.MSG_MAX_LENGTH_LOW}"),
    (["generate", "--model", "m", "--temperatures", "0.3,-1"], "generate",
     f"argument --temperatures: {contract.MSG_TEMPERATURE}"),
    (["generate", "--server", "http://127.0.0.1:1", "--top-k", "-1"], "generate",
     f"argument --top-k: {contract.MSG_TOP_K}"),
    (["generate", "--model", "m", "--top-p", "0"], "generate", f"argument --top-p: {contract.MSG_TOP_P}"),
    (["generate", "--model", "m", "--server", "s"], "generate", "not allowed with argument"),
    (["train", "--run-dir", "r", "--epochs", "0"], "train", "argument --epochs: must be >= 1, not 0"),
    (["train", "--run-dir", "r", "--dropout", "1"], "train", "argument --dropout: must be in [0, 1), not 1"),
    (["train", "--run-dir", "r", "--learning-rate", "abc"], "train", "argument --learning-rate: 'abc'"),
    (["train", "--run-dir", "r", "--default-top-p", "2"], "train",
     f"argument --default-top-p: {contract.MSG_TOP_P}"),
    (["export", "--run-dir", "r", "--export-base", "b", "--default-max-length", "5000"], "export",
     f"argument --default-max-length: {contract.MSG_MAX_LENGTH_HIGH}"),
    (["evaluate", "--model", "m"], "evaluate", "the following arguments are required: --data"),
    (["nope"], None, "invalid choice: 'nope'"),
])
def test_argument_errors_are_one_line_in_the_commands_form(capsys, argv, prefix, message):
    code, lines = errors(capsys, *argv)
    head = f"tfchargen {prefix}: error: " if prefix else "tfchargen: error: "
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(head) and message in lines[0], lines


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"tfchargen {tfchargen.__version__}\n"


@pytest.mark.parametrize("argv,verbose", [
    (["generate", "--model", "m"], False),
    (["--verbose", "generate", "--model", "m"], True),
    (["generate", "--model", "m", "--verbose"], True),
    (["-v", "train", "--run-dir", "r"], True),
    (["evaluate", "--model", "m", "--data", "d", "-v"], True),
])
def test_verbose_is_a_global_flag(argv, verbose):
    assert cli.build_parser().parse_args(argv).verbose is verbose


def test_every_flag_has_help():
    parser = cli.build_parser()
    for name, sub in parser.commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"


def test_train_help_states_every_default_and_the_presets(capsys):
    text = help_text(capsys, "train")
    parser = cli.build_parser().commands["train"]
    flags = {a.dest: a for a in parser._actions}
    for key, value in DEFAULTS.items():
        if key in flags and value is not None:
            assert f"(default {value})" in flat(flags[key].help), (key, flags[key].help)
        elif key in flags:
            assert "default" in flags[key].help, (key, flags[key].help)
    for key in ("epochs", "batch_size", "learning_rate", "schedule", "warmup_steps", "seed", "sample_every"):
        assert f"(default {DEFAULTS[key]})" in text, key
    assert set(config.PRESET_HELP) == set(config.PRESETS)
    for name, line in config.PRESET_HELP.items():
        assert f"{name} {line}" in text, name
    assert "always after the final epoch; 0 = never" in text
    assert f"0..{contract.MAX_NEW_CHARS}" in text


def test_generate_help_states_the_serving_defaults_and_limits(capsys):
    text = help_text(capsys, "generate")
    parser = cli.build_parser().commands["generate"]
    flags = {a.dest: a for a in parser._actions}
    for key, value in SERVING_DEFAULTS.items():
        assert flags[key].default == value
        assert f"--{key.replace('_', '-')}" in text
    assert f"new characters per sample, 0..{contract.MAX_NEW_CHARS} (default {SERVING_DEFAULTS['max_length']})" in text
    assert f"0 = greedy (default {SERVING_DEFAULTS['temperature']})" in text
    assert "--verbose" in text


# -- slow: fresh processes ------------------------------------------------------------------------
def user_env():
    """A user's environment: no TF_CPP_MIN_LOG_LEVEL of their own."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def tfchargen_clis(*arg_lists, timeout=300):
    """`python -m tfchargen ARGS` for each argument list, in a user's environment, all at once
    (run_together); CompletedProcess objects in order."""
    return run_together(*[[sys.executable, "-m", "tfchargen", *args] for args in arg_lists], timeout=timeout,
                        env=user_env())


def python(code, timeout=300):
    (r,) = run_together([sys.executable, "-c", code], timeout=timeout, env=user_env(), cwd=ROOT)
    return r


NO_TENSORFLOW = ("import sys\n"
                 "from tfchargen import cli\n"
                 "codes = [cli.main(['--help']), cli.main(['generate', '--help']),\n"
                 "         cli.main(['train', '--epochs', '0']),\n"
                 "         cli.main(['generate', '--server', 'http://127.0.0.1:1', '--timeout', '1'])]\n"
                 "print(codes, 'tensorflow' in sys.modules, 'numpy' in sys.modules)")
HEAVY = ["tensorflow_datasets", "tfchargen.training.train", "tfchargen.savedmodel.export", "tfchargen.model.charrnn",
         "tfchargen.data.sources", "tfchargen.data.pipeline", "tfchargen.training.evaluate"]


def no_training_code(tiny_model):
    return ("import sys\n"
            "from tfchargen import cli\n"
            f"code = cli.main(['generate', '--model', {str(tiny_model)!r}, '--max-length', '5'])\n"
            f"print(code, 'tensorflow' in sys.modules, [m for m in {HEAVY!r} if m in sys.modules])")


@pytest.fixture(scope="module")
def runs(tiny_run, tiny_model):
    """The fresh processes of this module's slow tests, started together in threads (each
    test's own commands at once, as before) at its first slow test; each test takes its own."""
    started = Concurrent(workers=4)
    started.start("quiet and first", tfchargen_clis,
                  ["--help"],
                  ["generate", "--model", tiny_model, "--max-length", 5000],
                  ["evaluate", "--model", tiny_model, "--data", "csv:/no/such.csv"],
                  ["generate", "--model", tiny_model, "--prompt", "Today ", "--max-length", 5],
                  ["generate", "--model", tiny_model, "--prompt", "Today ", "--max-length", 5, "--verbose"])
    started.start("no tensorflow", python, NO_TENSORFLOW)
    started.start("no training code", python, no_training_code(tiny_model))
    started.start("hints", tfchargen_clis,
                  ["generate", "--model", tiny_run],
                  ["evaluate", "--model", tiny_run, "--data", HELDOUT],
                  ["evaluate", "--run-dir", tiny_model, "--data", HELDOUT],
                  ["generate", "--model", tiny_model, "--version", 9])
    yield started
    started.close()


@pytest.mark.slow
def test_help_and_errors_are_quiet_and_first(runs):
    helped, refused, missing, quiet, verbose = runs.result("quiet and first")
    r = helped
    assert r.returncode == 0 and r.stdout.startswith("usage: tfchargen") and r.stderr == "", r.stderr
    # Refused before the model loads.
    r = refused
    assert r.returncode == 2
    want = f"tfchargen generate: error: argument --max-length: {contract.MSG_MAX_LENGTH_HIGH}"
    assert r.stderr.splitlines() == [want]
    # Found after TensorFlow has started: still the first and only line.
    r = missing
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr[-2000:]
    assert r.stderr.startswith("tfchargen evaluate: error: ") and "no such file" in r.stderr
    # A command that loads TensorFlow and runs the model writes nothing to stderr.
    r = quiet
    assert r.returncode == 0 and r.stdout.startswith("Today ") and r.stderr == "", r.stderr[-2000:]
    r = verbose
    assert r.returncode == 0 and r.stdout.startswith("Today "), r.stderr[-2000:]


@pytest.mark.slow
def test_help_errors_and_rest_generate_do_not_import_tensorflow(runs):
    r = runs.result("no tensorflow")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[-1] == "[0, 0, 2, 2] False True", r.stdout[-2000:]
    assert "tfchargen generate: error: " in r.stderr  # the refused connection, in one line


@pytest.mark.slow
def test_generate_with_a_model_loads_no_training_code(runs):
    r = runs.result("no training code")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[-1] == "0 True []", r.stdout[-2000:]


@pytest.mark.slow
def test_hints_for_a_run_dir_an_export_and_a_missing_version(runs, tiny_run, tiny_model):
    run_as_model, run_as_model_evaluate, model_as_run, missing_version = runs.result("hints")
    r = run_as_model
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr[-2000:]
    assert f"{tiny_run} is a run dir" in r.stderr and "tfchargen export --run-dir" in r.stderr
    r = run_as_model_evaluate
    assert r.returncode == 2 and f"--run-dir {tiny_run}" in r.stderr, r.stderr[-2000:]
    r = model_as_run
    assert r.returncode == 2 and "is an exported model" in r.stderr and f"--model {tiny_model}" in r.stderr
    r = missing_version
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"tfchargen generate: error: no SavedModel at {tiny_model}/9 (versions there: 1)"], r.stderr
