"""How a benchmark was run, written so that a results file names no machine's folders.

Results files are committed and read on other machines: every path they record (the command's `--out`,
`--work` and `--params`, a `--set key=/a/path` override, the params file) is relative to the project root.
A path outside the project names nothing another checkout has, so it is left out of the command (a field
records null, or just a file's name).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from aelab.paths import project_root

PATH_OPTIONS = ("--out", "--work", "--params")
"""The benchmark options whose value is a path."""


def portable_path(path: str | Path, root: Path | None = None) -> str | None:
    """`path` (relative ones from the working directory) relative to the project root; None outside it."""
    base = (root or project_root()).resolve()
    try:
        return Path(path).expanduser().resolve().relative_to(base).as_posix()
    except ValueError:
        return None


def portable_override(override: str, root: Path | None = None) -> str | None:
    """A `key=value` override with an absolute path value made relative to the root; None if it lies outside."""
    key, sep, value = override.partition("=")
    if not sep or not value.startswith(("/", "~")):
        return override
    relative = portable_path(value, root)
    return None if relative is None else f"{key}={relative}"


def portable_argv(argv: list[str], root: Path | None = None) -> list[str]:
    """The command-line arguments with their paths relative to the root; an option naming an outside path is dropped.

    Call it before the benchmark changes its working directory: relative paths are read from the current one.
    """
    kept: list[str] = []
    items = iter(argv)
    for arg in items:
        option, eq, inline = arg.partition("=")
        if option in (*PATH_OPTIONS, "--set") and not eq:
            value = next(items, None)
            if value is None:
                kept.append(arg)
                continue
        elif option in (*PATH_OPTIONS, "--set"):
            value = inline
        else:
            kept.append(arg)
            continue
        portable = portable_override(value, root) if option == "--set" else portable_path(value, root)
        if portable is not None:
            kept += [option, portable]
    return kept


def command_line(module: str, argv: list[str], root: Path | None = None) -> str:
    """`python -m <module> ...` as it runs from the project root, with portable paths, quoted for a shell."""
    return shlex.join(["python", "-m", module, *portable_argv(argv, root)])
