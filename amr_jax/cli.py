"""Entry point of every binary: absl's `app.run` with one-line errors.

A researcher who passes a wrong folder or config key should read one line, not a
60-line traceback through jax and absl:

  error: runs/syn/clap/abc.npz: missing key 'features' (keys: ['x']); check the feature folder ...

The project's own errors (`amr_jax.errors.AmrError` and subclasses), a missing
file and an unknown or invalid config key are reported so on stderr, with a
non-zero exit code per class (`EXIT_CODES`, documented in WORKSPACE.md);
`--verbose` (or absl's `-v 1`) prints the traceback as well. Anything else is a
bug and keeps its full traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from absl import app, flags, logging

from amr_jax.errors import AmrError

# Exit status by error class; checked in order (the first match wins).
EXIT_USAGE = 1          # unknown flag, missing required flag, a flag value the data rejects
EXIT_CONFIG = 2
EXIT_ANNOTATION = 3
EXIT_FEATURE = 4
EXIT_CONVERSION = 5
EXIT_NON_FINITE = 6
EXIT_OTHER = 7          # any other AmrError
EXIT_MISSING_FILE = 8


def _exit_code(error: BaseException) -> int:
    # Imported here: the classes live beside the code that raises them.
    from amr_jax.data.errors import AnnotationError, FeatureError
    from amr_jax.errors import ConfigError, ConversionError, UsageError

    table = ((UsageError, EXIT_USAGE), (ConfigError, EXIT_CONFIG), (AnnotationError, EXIT_ANNOTATION),
             (FeatureError, EXIT_FEATURE), (ConversionError, EXIT_CONVERSION))
    for cls, code in table:
        if isinstance(error, cls):
            return code
    if type(error).__name__ == "NonFiniteLossError":  # train/trainer.py imports jax; avoid it here
        return EXIT_NON_FINITE
    if isinstance(error, FileNotFoundError):
        return EXIT_MISSING_FILE
    return EXIT_OTHER


def closest_key(key: str, candidates: list[str]) -> str | None:
    """The valid key closest to a misspelled one, or None when nothing is close."""
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def _config_overrides(argv: list[str]) -> list[tuple[str, str]]:
    """(flag name, dotted key path) of every `--<config flag>.a.b=value` argument."""
    found = []
    for arg in argv[1:]:
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("--") and "." in name:
            flag, path = name.split(".", 1)
            found.append((flag, path))
    return found


def _load_config(flag: str, argv: list[str]) -> Any:
    """Builds the config named by `--<flag>=path.py[:arg]` again (absl drops it on a parse error)."""
    spec = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"--{flag}=")), None)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("_amr_cli_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception:  # noqa: BLE001 - the original parse error is reported instead
        return None


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every key in a (nested) ConfigDict."""
    paths = []
    for key in (node.keys() if hasattr(node, "keys") else []):
        path = f"{prefix}{key}"
        paths.append(path)
        paths.extend(_leaf_paths(node[key], f"{path}."))
    return paths


def describe_unknown_config_key(argv: list[str]) -> str | None:
    """Names the first `--config.a.b` override whose key does not exist, with the closest key.

    Returns None when every override names an existing key (the error was something else).
    """
    for flag, path in _config_overrides(argv):
        if flag not in flags.FLAGS:
            continue
        node = flags.FLAGS[flag].value or _load_config(flag, argv)
        if node is None:
            continue
        walked = []
        for part in path.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = ".".join([flag, *walked]) or flag
                close = closest_key(part, keys)
                elsewhere = [p for p in _leaf_paths(flags.FLAGS[flag].value or _load_config(
                    flag, argv)) if p.rsplit(".", 1)[-1] == part]
                if close:
                    hint = f"did you mean --{where}.{close}?"
                elif len(elsewhere) == 1:
                    hint = f"did you mean --{flag}.{elsewhere[0]}?"
                elif elsewhere:
                    # Several sub-configs hold the key (fwhm and fused both smooth): name them all
                    # rather than guess which system the user meant.
                    options = ", ".join(f"--{flag}.{p}" for p in elsewhere)
                    hint = f"did you mean one of {options}?"
                else:
                    hint = f"the keys of {where} are: {', '.join(sorted(keys))}"
                return f"unknown config key '{flag}.{path}' ('{part}' is not a key of {where}); {hint}"
            walked.append(part)
            node = node[part]
    return None


def format_error(error: BaseException) -> str | None:
    """The one-line report of a user-facing error, or None for a bug."""
    if isinstance(error, AmrError):
        message = str(error).strip()
        return f"{message}; {error.hint}" if error.hint else message
    if isinstance(error, FileNotFoundError):
        where = error.filename or ""
        return f"{where}: {error.strerror or 'no such file or directory'}; check the path"
    return None


def flags_error_text(error: BaseException) -> str:
    """The innermost readable message of an error raised while parsing flags."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return " ".join(text.split())


def _show_traceback() -> bool:
    verbose = flags.FLAGS["verbose"].value if "verbose" in flags.FLAGS else False
    return bool(verbose) or logging.get_verbosity() >= logging.DEBUG


def report_and_exit(error: BaseException) -> None:
    """Prints `error: ...` on stderr and exits, or re-raises an unexpected error."""
    line = format_error(error)
    if line is None:
        raise error
    if _show_traceback():
        traceback.print_exception(error, file=sys.stderr)
    first, *rest = line.splitlines() or [""]
    print(f"error: {first}", file=sys.stderr)
    for extra in rest:  # multi-line messages (e.g. the list of missing files)
        print(f"  {extra.strip()}", file=sys.stderr)
    if not _show_traceback():
        print("(run with --verbose for the traceback)", file=sys.stderr)
    sys.exit(_exit_code(error))


def _main_reporting_errors(main: Callable[[list[str]], Any], argv: list[str]) -> Any:
    try:
        return main(argv)
    except (AmrError, FileNotFoundError) as error:
        report_and_exit(error)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError) as error:
        # config_flags applies `--config.a.b=v` while parsing; an unknown key surfaces
        # as ml_collections' AttributeError/KeyError from deep inside absl.
        line = describe_unknown_config_key(argv)
        if line is not None:
            print(f"error: {line}", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
        if isinstance(error, AmrError):
            report_and_exit(error)
        text = str(error)
        if not isinstance(error, flags.Error) or "Error whilst parsing config file" in text:
            # A config file that fails to build (bad `:arg`): its own message is the last line.
            lines = [l for l in text.splitlines() if l.strip()] if isinstance(
                error, flags.Error) else [flags_error_text(error)]
            print(f"error: {lines[-1].strip()}; see the config file's docstring", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
        print(f"error: {error}; pass --helpshort to list the flags", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def run(main: Callable[[list[str]], Any]) -> None:
    """`app.run(main)` with `--verbose` and one-line error reports."""
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "On an error, print the full traceback too.")
    app.run(functools.partial(_main_reporting_errors, main), flags_parser=_parse_flags)


def log_outputs(outputs: dict[str, Any]) -> None:
    """Logs where a binary wrote its results, one line each (None entries are skipped).

    Args:
      outputs: {what: path or list of paths}, e.g. {"predictions": "runs/p.jsonl"}.
    """
    for what, where in outputs.items():
        if where is None or where == []:
            continue
        if isinstance(where, (list, tuple)):
            shown = f"{len(where)} files in {os.path.dirname(os.path.abspath(str(where[0])))}"
        else:
            shown = os.path.abspath(str(where))
        logging.info("wrote %s: %s", what, shown)


@dataclasses.dataclass(frozen=True)
class LaunchFlags:
    """The multi-host launch flags of a binary (`define_launch_flags`)."""

    coordinator_address: flags.FlagHolder
    num_processes: flags.FlagHolder
    process_id: flags.FlagHolder

    def initialize(self) -> None:
        """Connects the processes (call first in `main`, before any other JAX use); the
        processes other than 0 then log warnings and errors only (summaries once)."""
        from amr_jax import distributed  # imports jax; this module stays light

        distributed.initialize(self.coordinator_address.value, self.num_processes.value,
                               self.process_id.value)
        if not distributed.is_primary():
            logging.set_verbosity(logging.WARNING)


def define_launch_flags() -> LaunchFlags:
    """Defines --coordinator_address, --num_processes, --process_id (WORKSPACE.md "Multi-host").

    Call once at a binary's module level. Without them the binary runs on one process.
    """
    return LaunchFlags(
        coordinator_address=flags.DEFINE_string(
            "coordinator_address", "", "Multi-host: 'host:port' of process 0, or 'auto' on a TPU "
            "pod (jax.distributed.initialize() detects the hosts); '' for one process."),
        num_processes=flags.DEFINE_integer(
            "num_processes", 0, "Multi-host: number of processes (with an explicit "
            "--coordinator_address)."),
        process_id=flags.DEFINE_integer(
            "process_id", -1, "Multi-host: this process's index in [0, num_processes) (with an "
            "explicit --coordinator_address)."))
