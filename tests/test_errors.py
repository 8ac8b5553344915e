"""Errors carry their exit code (ctxsim.errors, the README's table); one helper words an exception as
one line; the same problem gets the same exit code in every command."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctxsim import errors
from ctxsim.cli.main import app
from ctxsim.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_REGISTRY,
    EXIT_USAGE,
    ConfigError,
    CtxsimError,
    DataError,
    MissingFileError,
    NotFoundError,
    RegistryError,
    RegistryURLError,
    exit_code_of,
    one_line,
)

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_error_class_lives_in_errors_py_with_an_int_exit_code():
    # importing the modules that used to define their own error classes must add none
    import ctxsim.registry.jobs  # noqa: F401  (imported for its side effect: class definitions)
    import ctxsim.report.compare  # noqa: F401  (as above)

    classes = [CtxsimError, *_subclasses(CtxsimError)]
    assert len(classes) >= 8
    for cls in classes:
        assert cls.__module__ == "ctxsim.errors", cls
        assert type(cls.exit_code) is int and cls.exit_code in (1, 2, 3, 4, 130), cls
    # and no module of ctxsim/, cli/ or tui/ defines an exception class of its own
    for folder in ("ctxsim", "cli", "tui"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "ctxsim" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(b) for b in node.bases]
                    assert not any(re.search(r"(Error|Exception)$", b) for b in bases), f"{path}: class {node.name}"


@pytest.mark.parametrize("cls, code", [
    (ConfigError, 2), (DataError, 2), (RegistryError, 3), (RegistryURLError, 2), (NotFoundError, 4),
    (errors.JobNotFoundError, 4), (errors.JobStateError, 2), (errors.ReferenceFormatError, 2),
    (MissingFileError, 4), (errors.RunFailedError, 1), (errors.WriteCancelled, 130),
])
def test_exit_codes_follow_the_readme_table(cls, code):
    assert cls.exit_code == code and exit_code_of(cls("x")) == code


def test_errors_keep_their_old_import_sites_and_kinds():
    from ctxsim.registry.jobs import JobNotFoundError, JobStateError
    from ctxsim.report.compare import NotFoundError as CompareNotFound

    assert JobNotFoundError is errors.JobNotFoundError and JobStateError is errors.JobStateError
    assert CompareNotFound is NotFoundError and issubclass(JobNotFoundError, NotFoundError)
    assert issubclass(MissingFileError, DataError)  # callers that catch DataError still do
    assert issubclass(RegistryURLError, RegistryError)
    assert issubclass(ConfigError, ValueError)


def test_readme_exit_code_table_matches_the_constants():
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for code, words in ((0, "ok"), (EXIT_FAILED, "the run"), (EXIT_USAGE, "bad input"),
                        (EXIT_REGISTRY, "registry unusable"), (EXIT_NOT_FOUND, "no such job/file"),
                        (EXIT_INTERRUPTED, "interrupted")):
        assert f"{code} {words}" in text, (code, words)


@pytest.mark.parametrize("exc, expected", [
    (ValueError("bad value\nsecond line"), "bad value"),
    (ValueError("\n\n   \n  indented first  \nnext"), "indented first"),
    (ValueError(""), "ValueError"),
    (RuntimeError("   \n\t"), "RuntimeError"),
    (KeyError("k"), "'k'"),
    (ConfigError("unknown loss 'x'; choose from: hybrid"), "unknown loss 'x'; choose from: hybrid"),
    (OSError(2, "No such file or directory"), "[Errno 2] No such file or directory"),
])
def test_one_line(exc, expected):
    assert one_line(exc) == expected


def test_one_line_with_type_and_exit_code_of_other_exceptions():
    assert one_line(ValueError("a\nb"), with_type=True) == "ValueError: a"
    assert one_line(ValueError(), with_type=True) == "ValueError"
    assert exit_code_of(ValueError("x")) == EXIT_FAILED
    assert exit_code_of(KeyboardInterrupt()) == EXIT_INTERRUPTED


def test_main_exits_with_the_error_s_own_code(monkeypatch, capsys):
    import ctxsim.cli.main as main_mod

    for exc, code in ((errors.JobNotFoundError("no job 7\ndetail"), 4), (RegistryError("locked"), 3),
                      (ConfigError("bad"), 2), (KeyboardInterrupt(), 130)):
        def boom(*_args, exc=exc, **_kw):
            raise exc

        monkeypatch.setattr(main_mod, "build_app", lambda modules=None: boom)  # main() builds its own app
        with pytest.raises(SystemExit) as ei:
            main_mod.main()
        assert ei.value.code == code
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "detail" not in err


def _one_error_line(r) -> str:
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.output, r.output
    return lines[0]


def test_a_named_file_that_does_not_exist_is_exit_4_in_every_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CTXSIM_DB", raising=False)
    missing = tmp_path / "missing.csv"
    r = runner.invoke(app, ["baselines", "--import", str(missing), "--db", str(tmp_path / "r.db")])
    assert r.exit_code == EXIT_NOT_FOUND and "no such file" in _one_error_line(r)
    r = runner.invoke(app, ["import-reference", str(tmp_path / "missing.pt"), "--dataset", "cub"])
    assert r.exit_code == EXIT_NOT_FOUND and "no such file" in _one_error_line(r)


@pytest.mark.parametrize("url", ["notaurl://", "postgresql+nodriver://u:secret@h/db"])
def test_an_unusable_registry_url_is_bad_input_exit_2(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTXSIM_DB", url)
    r = runner.invoke(app, ["ls"])
    line = _one_error_line(r)
    assert r.exit_code == EXIT_USAGE and "invalid registry URL" in line and "secret" not in line
    assert list(tmp_path.iterdir()) == []  # nothing created
