"""The package list, found rather than hand-written: ``ctxsim`` and its sub-packages, plus the two
front ends that live beside it (``cli/`` -> ``ctxsim.cli``, ``tui/`` -> ``ctxsim.tui``). Everything
else is in pyproject.toml; tests/test_packaging.py builds the wheel and checks every package is in it."""

from setuptools import find_packages, setup

FRONT_ENDS = ("cli", "tui")


def packages() -> tuple[list[str], dict[str, str]]:
    found = find_packages(include=["ctxsim", "ctxsim.*"],
                          exclude=[f"ctxsim.{f}{tail}" for f in FRONT_ENDS for tail in ("", ".*")])
    dirs: dict[str, str] = {}
    for top in FRONT_ENDS:
        dirs[f"ctxsim.{top}"] = top
        for sub in find_packages(where=top):
            dirs[f"ctxsim.{top}.{sub}"] = f"{top}/{sub.replace('.', '/')}"
    return found + list(dirs), dirs


PACKAGES, PACKAGE_DIR = packages()
setup(packages=PACKAGES, package_dir=PACKAGE_DIR)
