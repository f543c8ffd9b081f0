import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from emofuse import __version__
from emofuse.cli import cli


def test_version_and_help_list_commands() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_every_cli_module_command_is_reachable_by_name() -> None:
    import importlib

    from emofuse.cli import COMMAND_MODULES

    areas = sorted(set(COMMAND_MODULES.values()))
    defined = {
        command.name: area
        for area in areas
        for command in importlib.import_module(f"emofuse.cli.{area}").COMMANDS
    }
    assert defined == COMMAND_MODULES
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMAND_MODULES:
        assert f"  {name} " in result.output


@pytest.mark.subprocess
def test_a_command_imports_only_its_own_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from emofuse.cli import cli; "
        "cli(['verify', '--help'], standalone_mode=False); "
        "print(sorted(m for m in ('sklearn', 'transformers', 'emofuse.extract') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def usage_line(tmp_path, monkeypatch, args: list[str], option: str) -> str:
    """Run ``args`` in an empty folder: one usage line naming ``option``, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: Invalid value for '{option}'"), lines[0]
    assert list(tmp_path.iterdir()) == []
    return lines[0]


NUMBERS = [  # (command line, option): each value means nothing, and each raised a traceback or
    # was taken silently before (heads --text-dim 0 listed heads for 0-wide text)
    (["heads", "--speech-dim", "0"], "--speech-dim"),  # ZeroDivisionError
    (["heads", "--speech-dim", "-5"], "--speech-dim"),  # RuntimeError
    (["heads", "--text-layers", "-1"], "--text-layers"),
    (["heads", "--text-dim", "0"], "--text-dim"),
    (["heads", "--speaker-dim", "0"], "--speaker-dim"),
    (["heads", "--speech-layers", "0"], "--speech-layers"),
    (["heads", "--classes", "1"], "--classes"),
    (
        [
            "train",
            "--cache",
            "c.h5",
            "--split",
            "loso",
            "--head",
            "pooled",
            "--out",
            "r",
            "--seed",
            "-1",
        ],
        "--seed",
    ),  # fmt: skip
    (["corpus", "folds", "--root", "x", "--split", "loso", "--seed", "-1"], "--seed"),
    (["corpus", "synth", "--out", "s", "--seed", "-1"], "--seed"),
    (["corpus", "synth", "--out", "s", "--others-per-speaker", "-1"], "--others-per-speaker"),
    (["demo", "--out", "d", "--seed", "-1"], "--seed"),
    (["predict", "--run", "r", "--fold", "0", "a.wav"], "--fold"),
]


@pytest.mark.parametrize(
    "args, option", NUMBERS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in NUMBERS]
)
def test_a_meaningless_number_is_one_usage_line_naming_the_option(
    tmp_path, monkeypatch, args, option
) -> None:
    line = usage_line(tmp_path, monkeypatch, args, option)
    assert "Traceback" not in line


def test_corpus_folds_out_under_a_file_or_on_a_folder_is_one_line(tmp_path) -> None:
    import json

    from emofuse.corpus import write_synthetic_corpus

    root = tmp_path / "IEMOCAP_full_release"
    write_synthetic_corpus(root, utterances_per_speaker=4, others_per_speaker=0,
                           duration=(0.3, 0.5), progress=False)  # fmt: skip
    blocker = tmp_path / "FILE"
    blocker.write_text("keep me")
    for out, expected in ((blocker / "x.json", "is a regular file"), (root, "is a folder")):
        result = CliRunner().invoke(
            cli, ["corpus", "folds", "--root", str(root), "--split", "loso", "--out", str(out)]
        )
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert f"error: --out {out}" in lines[0] and expected in lines[0], lines[0]
    assert blocker.read_text() == "keep me"
    plan = tmp_path / "plan.json"
    args = ["corpus", "folds", "--root", str(root), "--split", "loso", "--out", str(plan)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert json.loads(plan.read_text())["split"] == "loso"
    args[args.index("loso")] = "lopo"
    assert CliRunner().invoke(cli, args).exit_code == 0  # an earlier plan there is replaced
    assert json.loads(plan.read_text())["split"] == "lopo"
    # round 8: a cache, a manifest or any other file was silently replaced by the plan
    (tmp_path / "c.h5").write_bytes(b"a cache")
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    (tmp_path / "c.zarr").mkdir()
    (tmp_path / "c.zarr" / "zarr.json").write_text("{}")
    for out, expected in ((tmp_path / "c.h5", "the plan is JSON; give a file name ending in .json"),
                          (tmp_path / "notes.json", "exists and is not a fold plan"),
                          (tmp_path / "c.zarr" / "plan.json", "is inside the cache")):  # fmt: skip
        args[-1] = str(out)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and expected in result.output, result.output
    assert (tmp_path / "c.h5").read_bytes() == b"a cache"
    assert (tmp_path / "notes.json").read_text() == '{"mine": 1}'


def test_progress_bars_are_drawn_on_a_terminal_only(tmp_path, monkeypatch) -> None:
    """With stderr a log file or a pipe (here: click's runner) a bar only filled the log with
    redraws; emofuse.progress draws it when stderr is a terminal."""
    import emofuse.progress

    args = ["corpus", "synth", "--utterances-per-speaker", "4", "--others-per-speaker", "0",
            "--duration", "0.2", "0.3", "--out"]  # fmt: skip
    piped = CliRunner().invoke(cli, [*args, str(tmp_path / "a")])
    assert piped.exit_code == 0, piped.output
    assert "synth demo" not in piped.output and "\r" not in piped.output
    assert piped.output.strip().startswith("wrote 40 utterances")
    monkeypatch.setattr(emofuse.progress, "stderr_is_terminal", lambda: True)
    shown = CliRunner().invoke(cli, [*args, str(tmp_path / "b")])
    assert shown.exit_code == 0 and "synth demo: 100%" in shown.output, shown.output
    monkeypatch.setattr(emofuse.progress, "stderr_is_terminal", lambda: False)
    again = CliRunner().invoke(cli, [*args, str(tmp_path / "a"), "--seed", "1"])  # over "a"
    assert again.exit_code == 0 and again.output.startswith(  # round-7: it replaced it silently
        f"note: replacing the synthetic corpus in {tmp_path / 'a'} (40 utterances, profile demo, "
        "seed 0); caches extracted from it no longer match its audio\n"
    ), again.output
    (tmp_path / "a" / "mynotes.txt").write_text("mine")  # a user's file beside ours
    kept = CliRunner().invoke(cli, [*args, str(tmp_path / "a")])
    assert kept.exit_code == 2 and "also holds files it did not write (mynotes.txt)" in kept.output
    assert (tmp_path / "a" / "mynotes.txt").read_text() == "mine"


def _float_options():
    """Every option of every command (corpus subcommands included) that takes a float."""
    import importlib

    from emofuse.cli import COMMAND_MODULES

    def floats(t) -> bool:
        if isinstance(t, click.Tuple):
            return any(floats(x) for x in t.types)
        return isinstance(t, click.types.FloatParamType)

    commands = [
        c for area in sorted(set(COMMAND_MODULES.values()))
        for c in importlib.import_module(f"emofuse.cli.{area}").COMMANDS
    ]  # fmt: skip
    while any(isinstance(c, click.Group) for c in commands):
        commands = [
            s for c in commands for s in (c.commands.values() if isinstance(c, click.Group) else [c])
        ]  # fmt: skip
    return [(c, p) for c in commands for p in c.params if floats(p.type)]


def test_every_float_option_refuses_nan_and_inf() -> None:
    """float() takes 'nan' and 'inf', and nan passes every range check: --batch-seconds inf was
    an int() traceback, --lr nan a worker's RemoteTraceback, --mixup nan a NaN in config.json."""
    found = _float_options()
    assert {p.opts[0] for _c, p in found} >= {"--lr", "--grad-clip", "--mixup", "--batch-seconds"}
    for command, param in found:
        ctx = click.Context(command)
        for value in ("nan", "inf", "-inf"):
            values = (value,) * param.nargs if param.nargs > 1 else value
            with pytest.raises(click.BadParameter):
                param.type_cast_value(ctx, values)


NON_FINITE = [
    (["train", "--cache", "c.h5", "--split", "loso", "--head", "concat", "--out", "r", "--lr",
      "nan"], "--lr"),
    (["train", "--cache", "c.h5", "--split", "loso", "--head", "concat", "--out", "r",
      "--grad-clip", "nan"], "--grad-clip"),
    (["train", "--cache", "c.h5", "--split", "loso", "--head", "concat", "--out", "r", "--mixup",
      "inf"], "--mixup"),
    (["extract", "--corpus", "manifest", "--manifest", "m.csv", "--out", "c.h5",
      "--batch-seconds", "inf"], "--batch-seconds"),
    (["extract", "--corpus", "manifest", "--manifest", "m.csv", "--out", "c.h5",
      "--batch-seconds", "nan"], "--batch-seconds"),
    (["extract", "--corpus", "manifest", "--manifest", "m.csv", "--out", "c.h5",
      "--flush-seconds", "inf"], "--flush-seconds"),
]  # fmt: skip


@pytest.mark.parametrize("args, option", NON_FINITE, ids=[" ".join(a[-2:]) for a, _ in NON_FINITE])
def test_a_non_finite_number_is_one_usage_line_naming_the_option(
    tmp_path, monkeypatch, args, option
) -> None:
    assert "not a finite number" in usage_line(tmp_path, monkeypatch, args, option)


def _run_with_stdout(args: list[str], stdout) -> subprocess.CompletedProcess:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "emofuse", *args], stdout=stdout, stderr=subprocess.PIPE,
        text=True, env=env, timeout=300,
    )  # fmt: skip


STDOUT_COMMANDS = [["heads"], ["heads", "--json"], ["--help"], ["--version"]]


@pytest.mark.parametrize("args", STDOUT_COMMANDS, ids=" ".join)
def test_a_full_disk_on_stdout_is_one_error_line(args) -> None:
    """`emofuse heads > /dev/full` (or info --json, corpus stats --json) was an OSError traceback."""
    with open("/dev/full", "w") as full:
        run = _run_with_stdout(args, full)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        "error: cannot write the command's output to standard output (No space left on device); "
        "free disk space or redirect the output elsewhere, then rerun"
    ], run.stderr


@pytest.mark.parametrize("args", STDOUT_COMMANDS, ids=" ".join)
def test_a_closed_pipe_on_stdout_ends_quietly_as_unix_tools_do(args) -> None:
    """`emofuse heads | head -0`: nothing on stderr (no traceback, no "Exception ignored" at exit),
    status 141 = 128 + SIGPIPE, as a shell reports for a Unix tool the closed pipe ended. The pipe's
    reading end is closed before the command starts, so every write meets EPIPE (no race)."""
    read, write = os.pipe()
    os.close(read)
    try:
        run = _run_with_stdout(args, write)
    finally:
        os.close(write)
    assert run.returncode == 141 and run.stderr == "", run.stderr


@pytest.mark.parametrize("args", [["heads"], ["--version"], ["predict", "--help"]], ids=" ".join)
def test_a_closed_standard_output_is_refused_not_a_silent_success(args) -> None:
    """`emofuse predict … >&-` exited 0 with its labels printed nowhere (round-14 train side row
    22): Python starts with sys.stdout = None and click's echo drops everything written there."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        ["bash", "-c", 'exec "$0" -m emofuse "$@" >&-', sys.executable, *args],
        stderr=subprocess.PIPE, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        "error: standard output is closed (`>&-`), where emofuse prints its results and "
        "progress: send it to a file (`> out.txt`) or to /dev/null, then rerun"
    ], run.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--cache", "c.h5", "--split", "loso", "--head", "pooled", "--out", ""],
        ["fuse", "a", "b", "--out", ""],
        ["extract", "--corpus", "iemocap", "--root", "corpus", "--out", ""],
        ["demo", "--out", ""],
        ["demo", "--out", "  "],
    ],
    ids=["train", "fuse", "extract", "demo", "demo-blank"],
)
def test_an_empty_out_is_one_line_and_writes_nothing_here(tmp_path, monkeypatch, args) -> None:
    """`--out "$RUN"` with RUN unset wrote the run's files into the current folder."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: Invalid value for '--out': ") and "is empty" in lines[0]
    example = {"extract": "cache/mine.h5"}.get(args[0], "runs/mine")  # round 8: extract's own
    assert f"e.g. --out {example} " in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_demo_into_a_cache_folder_is_refused_before_writing(tmp_path):
    from tests.cache.cache_synth import write_cache

    cache = tmp_path / "c.zarr"
    write_cache(cache, n=4)
    before = sorted(p.name for p in cache.iterdir())
    result = CliRunner().invoke(cli, ["demo", "--out", str(cache)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == (f"error: --out {cache} is the cache {cache}; give the demo a folder of "
                        "its own (e.g. --out demo)")  # fmt: skip
    assert sorted(p.name for p in cache.iterdir()) == before  # no corpus, no models written


def test_a_malformed_fault_plan_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOFUSE_FAULT", "bogus")
    from emofuse import faults

    with pytest.raises(Exception, match="EMOFUSE_FAULT='bogus': give STAGE:N"):
        faults.reach("lock-taken")
    # round 8: an unknown action was a traceback mid-run; a misspelt stage or N=0 was ignored
    for spec in ("part-write:1:explode", "part-commited:1", "part-write:0"):
        monkeypatch.setenv("EMOFUSE_FAULT", spec)
        result = CliRunner().invoke(cli, ["heads"])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(f"error: EMOFUSE_FAULT={spec!r}: give STAGE:N[:ACTION]")


def test_demo_into_or_inside_a_run_folder_is_refused_before_writing(tmp_path):
    """Round-10 row 62 (train side): `demo --out RUN` wrote its corpus, models and cache (80 MB)
    into a finished run before the run-folder check at step 4."""
    from emofuse.train.loop import LoopConfig
    from emofuse.train.run import train_run
    from tests.helpers import TINY_HEAD, FakeCache

    run = tmp_path / "run"
    train_run(FakeCache(n_per_speaker=4), TINY_HEAD, run, "loso",
              loop=LoopConfig(epochs=1, batch_size=16), folds=[1], progress=False)  # fmt: skip
    before = sorted(p.name for p in run.iterdir())
    for out, start in ((run, f"error: --out {run} is a run folder (train or fuse wrote it)"),
                       (run / "demo", f"error: --out {run / 'demo'} is inside the run folder")):  # fmt: skip
        result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(start), lines[0]
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize("where", ["a user's folder", "a folder with a corpus of its own"])
def test_demo_into_a_folder_of_other_files_is_refused_before_writing(tmp_path, where):
    """Round-17: `demo --out /` spread corpus/, models/, cache/ and runs/ among the root's
    folders; a folder whose corpus/ is not the demo's would have been extracted and trained on."""
    out = tmp_path / "home"
    if where == "a user's folder":
        (out / "notes").mkdir(parents=True)
        (out / "thesis.tex").write_text("keep")
        holds = "notes, thesis.tex"
    else:
        (out / "corpus" / "Session1").mkdir(parents=True)
        holds = "corpus (not the demo's synthetic corpus)"
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == (
        f"error: --out {out} is not empty and not a demo folder (it holds {holds}); give the "
        "demo a new or empty folder of its own (e.g. --out demo)"
    )
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_an_interrupted_demo_writes_its_half_corpus_again(tmp_path, monkeypatch):
    """A demo killed while writing its corpus left corpus/Session1: the rerun "reused" the half
    corpus (only Session1's presence was checked) and extracted and trained on it."""
    import emofuse.corpus
    from emofuse.corpus.synthetic.layout import MARKER

    out = tmp_path / "demo"
    (out / "corpus" / "Session1").mkdir(parents=True)
    (out / "corpus" / MARKER).write_text('{"complete": false}\n')  # as the writer leaves it

    class Rewritten(Exception):
        pass

    def rewrite(*args, **kwargs):
        raise Rewritten

    monkeypatch.setattr(emofuse.corpus, "write_synthetic_corpus", rewrite)
    result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert isinstance(result.exception, Rewritten), result.output
    assert "writing the synthetic demo corpus" in result.output, result.output


def test_a_demo_cache_made_with_its_models_elsewhere_says_the_folder_moved(tmp_path):
    """Round-10 row 61: a copied demo folder's rerun said "extracted with --speaker-model
    'demo/models/…', rerun with the same options", options the demo chooses itself."""
    from emofuse.cache import CacheWriter
    from emofuse.demo import _check_cache_models
    from emofuse.errors import EmofuseError
    from tests.cache.cache_synth import feed, order, specs

    cache = tmp_path / "copy" / "cache" / "demo.h5"
    old = {"speech_model": "demo/models/speech/hubert", "text_model": "demo/models/text/bert",
           "speaker_model": "demo/models/speaker/ecapa"}  # fmt: skip
    w = CacheWriter(cache, settings=old, streams=specs())
    feed(w, 3)
    w.close(order=order(3))
    _check_cache_models(tmp_path / "demo", cache, *old.values())  # the same paths: no objection
    new = [v.replace("demo/", "copy/", 1) for v in old.values()]
    with pytest.raises(EmofuseError) as err:
        _check_cache_models(tmp_path / "copy", cache, *new)
    assert str(err.value) == (
        f"--out {tmp_path / 'copy'} holds a demo cache made with its models at other paths "
        "(speech_model 'demo/models/speech/hubert': the folder was copied or moved?); delete "
        f"{cache} to extract it again here, or give the demo a new --out"
    )


@pytest.mark.parametrize(
    "failure, said",
    [
        ("libnccl.so.2: failed to map segment from shared object", "the process ran out of memory"),
        ("libtorch_cpu.so: cannot open shared object file", "a library emofuse needs cannot be imported"),
    ],
)  # fmt: skip
def test_torch_that_cannot_load_is_one_line_not_a_traceback(tmp_path, failure, said) -> None:
    """Under `ulimit -v 3000000` (a cluster's memory limit) importing torch failed with an
    ImportError traceback (round-13 extract side row 76); a broken install the same."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError({failure!r})\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{root}"}
    result = subprocess.run(
        [sys.executable, "-m", "emofuse", "extract", "--root", str(tmp_path), "--out",
         str(tmp_path / "x.h5"), "--quiet"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"error: {said}") and failure in lines[0], lines[0]


def test_a_model_that_does_not_fit_in_memory_is_not_called_damaged(tmp_path) -> None:
    """An intact safetensors file whose mapping a memory limit refused was "damaged … copy that
    file again" (round-13 extract side row 77)."""
    from emofuse.encoders.common import load_error

    (tmp_path / "config.json").write_text("{}")
    err = OSError(
        "unable to mmap 486752 bytes from file <model.safetensors>: Cannot allocate memory"
    )
    message = str(load_error("speech", str(tmp_path), "--speech-model", RuntimeError("x")))
    assert "ran out of memory" not in message  # an ordinary failure keeps its own line
    try:
        raise RuntimeError("Error while deserializing header") from err
    except RuntimeError as chained:
        message = str(load_error("speech", str(tmp_path), "--speech-model", chained))
    assert message.startswith(f"cannot load speech model {tmp_path}: the process ran out of "
                              "memory or address space"), message  # fmt: skip
    assert "damaged" not in message and "copy that file again" not in message


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--cache", "", "--split", "loso", "--head", "audio", "--out", "r"],
        ["train", "--cache", "c.h5", "--split", "loso", "--head", " ", "--out", "r"],
        ["report", ""],
        ["predict", "--run", "", "a.wav"],
        ["predict", "--run", "r", ""],
        ["predict", "--run", "r", "a.wav", "--transcripts", ""],
        ["fuse", "", "r", "--out", "f"],
        ["compare", "r", ""],
        ["info", ""],
        ["verify", ""],
    ],
    ids=lambda a: " ".join(x if x.strip() else "''" for x in a),
)
def test_an_empty_path_or_name_is_refused_as_empty_not_as_the_current_folder(
    tmp_path, monkeypatch, args
) -> None:
    """`report ""` said `. is not a run folder`, predict `audio  is a folder` (round-15 train
    side row 48): a path the user never named."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "is empty (an unset shell variable?); give a " in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_an_enormous_bootstrap_count_is_refused_up_front() -> None:
    """`compare --resamples 100000000` ran for minutes without a word (round-15 train side
    row 49)."""
    result = CliRunner().invoke(cli, ["compare", "a", "b", "--resamples", "100000000"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--resamples" in lines[0] and "100000" in lines[0], lines[0]


@pytest.mark.parametrize(
    "args",
    [["report", "loopA"], ["predict", "--run", "loopA", "a.wav"], ["predict", "--run", "r", "loopA"],
     ["fuse", "r", "loopA", "--out", "f"], ["compare", "r", "loopA"], ["info", "loopA"]],
    ids=" ".join,
)  # fmt: skip
def test_a_symlink_loop_given_as_an_input_is_named_a_loop(tmp_path, monkeypatch, args) -> None:
    """As an input the loop was "does not exist", "not a run folder", "audio file … not found"
    (round-15 train side row 68); as an output it was already named a loop."""
    monkeypatch.chdir(tmp_path)
    os.symlink("loopB", "loopA")
    os.symlink("loopA", "loopB")
    result = CliRunner().invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "loopA is a symbolic link that loops back on itself" in lines[0], lines[0]


def test_an_out_on_a_read_only_mount_says_so_not_chmod(tmp_path, monkeypatch):
    """Round-17 train side row 37: a resume into a run on a read-only bind mount was told to
    `chmod u+w` it, which fails there too (chmod: Read-only file system)."""
    import types

    from emofuse import errors
    from emofuse.errors import EmofuseError, check_out_path

    run = tmp_path / "rob"
    run.mkdir()
    (run / "config.json").write_text("{}")
    real = os.statvfs
    monkeypatch.setattr(errors, "_may", lambda path, mode: False)  # access(W_OK): EROFS
    monkeypatch.setattr(
        os,
        "statvfs",
        lambda p: types.SimpleNamespace(f_flag=os.ST_RDONLY) if Path(p) == run else real(p),
    )
    with pytest.raises(EmofuseError) as err:
        check_out_path(run)
    assert str(err.value) == (
        f"--out {run}: {run} is on a file system mounted read-only; remount it read-write, or "
        "choose another --out"
    )
    monkeypatch.setattr(os, "statvfs", real)  # a writable mount, the folder's mode the cause
    with pytest.raises(EmofuseError, match=r"make it writable \(`chmod u\+w"):
        check_out_path(run)
