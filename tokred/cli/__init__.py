"""The ``tokred`` command. Each subcommand is a ``main(argv) -> int`` in its own module, imported
only when used, so tests can call ``tokred.cli.main([...])`` without a subprocess.

The library's own commands are listed here; applications add theirs through the entry-point
group ``tokred.commands`` (the sweep runner in ``experiments/`` declares ``sweep``, ``report``
and ``merge`` there), so the library never imports them.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib import metadata

COMMAND_GROUP = "tokred.commands"
COMMANDS = {
    "list": ("tokred.cli.reducers:main", "list the available reducers and their options"),
    "measure": ("tokred.cli.measure:main", "GMACs, tokens, memory, speed-up vs none (one table)"),
    "synth": ("tokred.cli.synth:main", "generate the synthetic video-text benchmark"),
    "train": ("tokred.cli.train:main", "fine-tune a retrieval model (full or LoRA; DDP via torchrun)"),
    "eval": ("tokred.cli.eval:main", "evaluate retrieval (R@K, MdR, MnR, R-Sum)"),
    "data": ("tokred.cli.data:main", "dataset tools: `data check` lists undecodable videos"),
}
PLUGIN_HELP = {"sweep": "run a sweep config (cost, quality, provenance trials) and its report",
               "report": "tables and figures from sweep results",
               "merge": "merge the results files of several sweep runs or shards"}


def commands() -> dict[str, tuple[str, str]]:
    """The library's commands plus those declared in the ``tokred.commands`` entry points."""
    found = dict(COMMANDS)
    for ep in metadata.entry_points(group=COMMAND_GROUP):
        found.setdefault(ep.name, (ep.value, PLUGIN_HELP.get(ep.name, f"from {ep.value}")))
    return found


def main(argv: list[str] | None = None) -> int:
    """``tokred [--debug] COMMAND [options]`` (or ``tokred --version``); returns the exit status.

    A user error (a bad value, a missing or unreadable file; see :func:`is_user_error`) prints
    ``error: ...`` and returns 2 without a traceback; ``--debug`` shows the traceback instead.
    Any other exception is a bug and keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == "--debug"
    argv = argv[1:] if debug else argv
    if argv and argv[0] in ("-V", "--version"):
        print(version_text())
        return 0
    table = commands()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: tokred [--debug] COMMAND [options]  |  tokred --version\n\ncommands:")
        for name, (_, text) in table.items():
            print(f"  {name:<17} {text}")
        print("\n--debug: show the traceback of an error instead of one line\n"
              "-V, --version: tokred's version, git commit and those of torch and open_clip\n"
              "tokred COMMAND --help: the command's options, with their defaults")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in table:
        import difflib

        close = difflib.get_close_matches(cmd, table)
        print(f"tokred: unknown command {cmd!r}" + (f"; did you mean {close[0]!r}?" if close else "")
              + f" Commands: {', '.join(table)}", file=sys.stderr)
        return 2
    # open_clip logs model building on the root logger at INFO: keep the console for results.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tokred").setLevel(logging.INFO)
    module, _, func = table[cmd][0].partition(":")
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except SystemExit as exit_:  # argparse: usage errors (2) and --help (0), already printed
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"tokred {cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        print(f"error: {error_text(err)}\n(tokred --debug {cmd} ... shows the traceback)",
              file=sys.stderr)
        return 2


def version_text() -> str:
    """``tokred 0.1.0 (git <commit>[, dirty]) torch X open_clip Y python Z``."""
    from tokred.env import code, software

    c, sw = code(), software()
    git = f" (git {c['commit'][:12]}{', dirty' if c['dirty'] else ''})" if c["commit"] else ""
    return (f"tokred {sw['tokred']}{git}; torch {sw['torch']}, open_clip "
            f"{sw['open_clip_torch']}, python {sw['python']}")


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` reports a problem with the user's input rather than a bug in tokred.

    User errors: a value refused (``ValueError``, which includes config errors, bad JSON and
    undecodable text), a file missing, unreadable or unwritable (``OSError``: not found,
    permission, read-only file system, disk full), a video that cannot be decoded, and an
    unknown reducer or reducer option. Everything else (``KeyError``, ``TypeError``,
    ``RuntimeError``, ...) is treated as a bug and keeps its traceback.
    """
    from tokred.data.video import VideoDecodeError
    from tokred.registry import ReducerOptionError, UnknownReducerError

    return isinstance(err, (ValueError, OSError, VideoDecodeError, UnknownReducerError,
                            ReducerOptionError))


def error_text(err: BaseException) -> str:
    """The message of ``err`` (a ``KeyError``'s without the quotes ``str()`` adds)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return str(text) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
