import argparse
import subprocess
import sys

import pytest

from pipelines.cli import build_parser, main


def test_every_command_has_help():
    parser = build_parser()
    (subcommands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    commands = subcommands.choices
    assert "obelics" in commands
    for name, sub in commands.items():
        assert sub.format_help().strip(), name


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["obelics", "--input", "missing-folder", "--output", "o"], {}, "input not found"),
        (["obelics", "--input", ".", "--output", "o", "--drop-top-ppl", "1.5"], {}, "must be a fraction"),
        (
            ["obelics", "--input", ".", "--output", "o", "--spawning", "--spawning-batch-size", "1"],
            {"SPAWNING_TOKEN": "t"},
            "between 2 and",
        ),
        (
            ["obelics", "--input", ".", "--output", "o", "--spawning", "--spawning-batch-size", "1"],
            {"SPAWNING_OPTS_KEY": "t"},
            "between 2 and",
        ),
        (
            ["obelics", "--input", ".", "--output", "o", "--spawning"],
            {},
            "--spawning needs an API token in $SPAWNING_TOKEN or $SPAWNING_OPTS_KEY",
        ),
        (
            ["obelics", "--input", ".", "--output", "o", "--spawning", "--spawning-token-env", "MINE"],
            {"SPAWNING_TOKEN": "t"},
            "needs an API token in $MINE",
        ),
    ],
)
def test_bad_arguments_give_one_line_errors(argv, env, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("SPAWNING_TOKEN", "SPAWNING_OPTS_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code: int | str | None
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own checks
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_empty_input_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main(["obelics", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no .parquet/.arrow files" in err


def test_console_script_help_runs():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "obelics", "--help"], capture_output=True, text=True, check=True)
    assert "--drop-top-ppl" in out.stdout and "--spawning" in out.stdout


def _commands(parser: argparse.ArgumentParser, name: str):
    """(name, parser) of `parser` and of every subcommand under it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


def every_command():
    from training.cli import export_parser, train_parser
    from training.evaluation.command import eval_parser

    yield from _commands(build_parser(), "curate")
    yield from (("train", train_parser()), ("train export", export_parser()), ("train eval", eval_parser()))


def test_every_command_explains_every_argument(capsys):
    for name, parser in every_command():
        undocumented = [a.option_strings or a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
        assert not undocumented, f"{name}: arguments without help: {undocumented}"
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["--help"])
        assert exit_.value.code == 0 and capsys.readouterr().out.startswith("usage:"), name


def test_one_spelling_for_one_idea():
    parser = build_parser()
    for argv, dest, value in [
        (["obelics", "--input", "i", "--output", "o", "--samples-per-shard", "7"], "docs_per_shard", 7),
        (["obelics", "--input", "i", "--output", "o", "--docs-per-shard", "7"], "docs_per_shard", 7),
        (["pdfs", "--input", "i", "--output", "o", "--samples-per-shard", "7"], "pages_per_shard", 7),
        (["pdfs", "--input", "i", "--output", "o", "--image-format", "jpg"], "image_format", "jpeg"),
        (["pairs", "--input", "i", "--output", "o", "--image-format", "jpeg"], "image_format", "jpg"),
    ]:
        assert getattr(parser.parse_args(argv), dest) == value, argv


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    from curation.errors import UserError

    def fails_with(error):
        def handler(args):
            raise error

        return handler

    parser = build_parser()
    args = parser.parse_args(["obelics", "--input", "i", "--output", "o"])
    monkeypatch.setattr("pipelines.cli.build_parser", lambda: parser)
    for error, code in ((UserError("--thing must be positive"), 2), (ValueError("a bug"), None)):
        monkeypatch.setattr(args, "handler", fails_with(error), raising=False)
        monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
        if code is None:
            with pytest.raises(ValueError, match="a bug"):
                main([])
        else:
            assert main([]) == code
            assert capsys.readouterr().err == "curate obelics: error: --thing must be positive\n"
