"""Every option is validated when the command line is parsed: a bad value fails at once with a
message naming the option (exit 2), before any input is read or any model is trained.

The inputs named here do not exist, so a check that ran only later would report a missing file
instead of the option: the tests fail unless validation happens at parse time.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from compresslm.cli import build_parser, main
from compresslm.cli.common import unescape

ROOT = Path(__file__).resolve().parents[1]
SELECT = ["select", "--target", "missing-t.jsonl", "--source", "missing-s.jsonl"]
M1_TRAIN = ["m1", "train", "--corpus", "missing.txt", "-o", "m1-out"]
COMPRESS = ["compress", "missing.txt", "-o", "x.clm", "--model", "missing-m1"]

BAD = [
    ([*SELECT, "--k", "10", "--workers", "0"], "--workers"),
    ([*SELECT, "--k", "10", "--batch-size", "0"], "--batch-size"),
    ([*SELECT, "--k", "0"], "--k"),
    ([*SELECT, "--k", "-5"], "--k"),
    ([*SELECT, "--budget-tokens", "lots"], "--budget-tokens"),
    ([*SELECT, "--k", "10", "--max-bytes", "-1"], "--max-bytes"),
    ([*SELECT, "--k", "10", "--min-tokens", "-1"], "--min-tokens"),
    ([*SELECT, "--k", "10", "--scores", "x.csv"], "--scores"),
    ([*SELECT, "--k", "10", "--method", "foo"], "--method"),
    ([*SELECT, "--k", "10", "--method", "zipfit+bogus"], "--method"),
    ([*SELECT, "--k", "10", "--template", "{text:999999999}"], "--template"),
    ([*SELECT, "--k", "10", "--template", "{text:{width}}"], "--template"),
    ([*SELECT, "--k", "10", "--target-template", "no fields"], "--target-template"),
    ([*M1_TRAIN, "--context", "1"], "--context"),
    ([*M1_TRAIN, "--lr", "-1"], "--lr"),
    ([*M1_TRAIN, "--lr", "nan"], "--lr"),
    ([*M1_TRAIN, "--lr", "inf"], "--lr"),
    ([*M1_TRAIN, "--threads", "0"], "--threads"),
    ([*M1_TRAIN, "--threads", "-1"], "--threads"),
    ([*M1_TRAIN, "--size", "huge"], "--size"),
    ([*M1_TRAIN, "--heldout", "1.5"], "--heldout"),
    ([*M1_TRAIN, "--train-tokens", "0"], "--train-tokens"),
    ([*COMPRESS, "--max-window-bytes", "1"], "--max-window-bytes"),
    ([*COMPRESS, "--batch-size", "0"], "--batch-size"),
    ([*COMPRESS, "--segment-bytes", "-1"], "--segment-bytes"),
    (["align", "missing-a", "missing-b", "--max-pairs", "-3"], "--max-pairs"),
]


@pytest.mark.parametrize(("argv", "option"), BAD, ids=[" ".join(a[-2:]) for a, _ in BAD])
def test_bad_option_fails_at_parse_time_naming_it(argv, option, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err or f"{option}:" in err, err
    assert "missing" not in err.split("error:")[-1]  # no input was looked at


def test_counts_accept_suffixes_everywhere() -> None:
    parser = build_parser()
    args = parser.parse_args([*SELECT, "--budget-tokens", "2M", "--max-bytes", "1.5M"])
    assert (args.budget_tokens, args.max_bytes) == (2_000_000, 1_500_000)
    assert parser.parse_args([*M1_TRAIN, "--train-tokens", "300k"]).train_tokens == 300_000
    assert parser.parse_args(["align", "a", "b", "--max-pairs", "0"]).max_pairs == 0


def test_escapes_typed_in_a_shell_are_read_as_characters() -> None:
    assert unescape(r"{prompt}\n{canonical_solution}") == "{prompt}\n{canonical_solution}"
    assert unescape(r"a\tb\\n\x") == "a\tb\\n\\x"  # \\ is a backslash; unknown escapes stay


def test_the_readmes_template_line_builds_a_newline() -> None:
    """The README's example, split as a POSIX shell would, puts a real newline between the fields."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if "-template " in line]
    assert lines, "the README shows a --template example"
    parser = build_parser()
    for line in lines:
        words = shlex.split(line.split("#")[0])
        flag = next(w for w in words if w.endswith("-template"))
        value = words[words.index(flag) + 1]
        assert "\\n" in value  # what the shell hands over: a backslash and an n
        args = parser.parse_args([*SELECT, "--k", "1", flag, value])
        built = getattr(args, flag.lstrip("-").replace("-", "_"))
        assert "\\" not in built and "\n" in built
        fields = {name: name.upper() for name in ("prompt", "canonical_solution")}
        assert built.format(**fields) == "PROMPT\nCANONICAL_SOLUTION"


STUDY = ["study", "select", "--source", "missing-s.jsonl", "--out", "missing-out"]
STUDY_BAD = [
    ([*STUDY, "--methods", "zipfit,foo"], "--methods"),
    ([*STUDY, "--jobs", "0"], "--jobs"),
    ([*STUDY, "--budgets", "200k,none"], "--budgets"),
    ([*STUDY, "--seeds", "0"], "--seeds"),
    ([*STUDY, "--warmup", "nan"], "--warmup"),
    ([*STUDY, "--base-size", "huge"], "--base-size"),
    (["study", "tokenization", "--sizes", "tiny,enormous"], "--sizes"),
    (["study", "tokenization", "--jobs", "-2"], "--jobs"),
    (["study", "tokenization", "--vocab-size", "0"], "--vocab-size"),
    (["tokenize", "missing", "-o", "x", "--vocab-size", "0"], "--vocab-size"),
    (["tokenize", "missing", "-o", "x", "--chunk-bytes", "0"], "--chunk-bytes"),
    (["tokenize", "missing", "-o", "x", "--val-fraction", "1"], "--val-fraction"),
    (["train", "--tokens", "missing", "-o", "x", "--lr", "inf"], "--lr"),
    (["train", "--tokens", "missing", "-o", "x", "--seq-len", "1"], "--seq-len"),
    (["eval", "--model", "missing", "--batch-size", "-1"], "--batch-size"),
    (["generate", "--model", "missing", "--top-k", "0"], "--top-k"),
    (["generate", "--model", "missing", "--temperature", "nan"], "--temperature"),
    (["generate", "--model", "missing", "--threads", "0"], "--threads"),
]


@pytest.mark.parametrize(("argv", "option"), STUDY_BAD, ids=[" ".join(a[-2:]) for a, _ in STUDY_BAD])
def test_bad_study_and_model_options_fail_before_any_work(argv, option, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err, err


def test_study_seq_len_beyond_the_default_base_model_fails_before_pretraining(tmp_path, capsys) -> None:
    argv = ["study", "select", "--out", str(tmp_path / "o"), "--seq-len", "100000", "--pretrain-tokens", "1G"]
    assert main(argv) == 2  # 1G bytes of pretraining would take hours: the check comes first
    assert "--seq-len 100000" in capsys.readouterr().err


def test_every_option_shows_its_default_in_help() -> None:
    parser = build_parser()
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help().split("options:")[1]
    for option, default in (("--seq-len", "128"), ("--lr", "0.001"), ("--seed", "0"), ("--device", "auto")):
        block = help_text.split(f"  {option}", 1)[1].split("\n  -", 1)[0]
        assert f"default: {default}" in " ".join(block.split()), (option, block)


def test_torch_threads_default_to_the_measured_one_everywhere() -> None:
    """One thread: 3-30x faster than torch's default on a shared machine (see DEFAULT_THREADS)."""
    import inspect

    from compresslm.coding.m1_train import train_m1
    from compresslm.m2 import M2Config
    from compresslm.models.train import DEFAULT_THREADS

    parser = build_parser()
    for argv in (
        ["train", "--tokens", "d", "-o", "o"],
        ["eval", "--model", "m"],
        ["generate", "--model", "m"],
        M1_TRAIN,
        ["study", "tokenization"],
    ):
        assert parser.parse_args(argv).threads == DEFAULT_THREADS == 1, argv
    assert M2Config().threads == DEFAULT_THREADS
    assert inspect.signature(train_m1).parameters["threads"].default == DEFAULT_THREADS


def _options(parser, name="compresslm"):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _options(sub, f"{name} {sub_name}")
        elif action.option_strings and action.nargs != 0 and not action.required:
            yield name, action


def test_every_optional_value_states_its_default_in_help() -> None:
    """Either argparse shows the default (not None) or the help text says what happens without it."""
    parser = build_parser()
    missing = [
        f"{name} {action.option_strings[-1]}"
        for name, action in _options(parser)
        if action.default is None and "default" not in (action.help or "")
    ]
    assert not missing, missing
