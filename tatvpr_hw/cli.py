"""The ``tatvpr`` command line.

Each area of the flow registers its commands from its own module under
``tatvpr_hw/commands/`` (so the parts grow without editing one big file). Expected errors
(:class:`UserError`, the models' :class:`ModelInputError`, :class:`SimInputError`) print one line and exit with status 2.
"""

from __future__ import annotations

import logging
import sys

import typer

from brevitas_models.errors import ModelInputError
from sim.errors import SimInputError
from tatvpr_hw.commands import data, demo, dse, evaluation, export_fw, export_hw, models, rtl, simulate, training
from tatvpr_hw.commands import board as board_cmd
from tatvpr_hw.errors import UserError

def _quiet_torch_cuda_probe() -> None:
    """torch.utils.cpp_extension logs "No CUDA runtime is found" at WARNING when it is imported (by
    brevitas) on a machine with nvcc but no GPU; it says nothing about our run. Its logger's level
    must be set before that import, so this runs before any command."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _flags_without_type_column() -> None:
    """typer's rich help prints a type for every option, so a flag reads ``--json <bool>`` as if it
    took a value; show no type for flags (and counters), like click's plain help does."""
    from typer.core import TyperOption

    if getattr(TyperOption.display_type_rich, "_tatvpr_flags", False):
        return
    original = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        if self.is_flag or self.count:
            return None
        return original(self, ctx)

    display_type_rich._tatvpr_flags = True
    TyperOption.display_type_rich = display_type_rich


_quiet_torch_cuda_probe()
_flags_without_type_column()

app = typer.Typer(
    name="tatvpr",
    help="TAT-VPR hardware codesign flow: ternary ViT for VPR -> accuracy, cycles, energy, FPGA IP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
export_app = typer.Typer(help="Export the student to FPGA frameworks and board projects.",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")

for _module in (models, data, training, evaluation, simulate, dse, export_fw, export_hw, board_cmd, rtl, demo):
    _module.register(app, export_app)


_CLICK_ERRORS: tuple[type[BaseException], ...] = ()


def _click_errors() -> tuple[type[BaseException], ...]:
    """Usage-error classes of every click flavour: click's own and typer's vendored copy."""
    global _CLICK_ERRORS
    if not _CLICK_ERRORS:
        import click
        found: list[type[BaseException]] = [click.ClickException]
        try:
            from typer._click import exceptions as vendored  # typer >= 0.20 ships its own click
            found.append(vendored.ClickException)
        except ImportError:  # pragma: no cover - older typer uses click itself
            pass
        _CLICK_ERRORS = tuple(found)
    return _CLICK_ERRORS


def _exit_code(value) -> int:
    """The exit status a command's return value (or a click/typer Exit) stands for."""
    if value is None or value is True:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return value
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tatvpr`` console script.

    Exit codes: 0 ok; 1 a check failed (mismatch, bound exceeded); 2 bad input or usage
    (one ``error:`` line, no traceback); 130 interrupted. Only a real bug prints a traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # third-party chatter at INFO (faiss' CPU-feature probing, Lightning's tips) hides our progress
    for noisy in ("faiss.loader", "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = _exit_code(app(args=argv, prog_name="tatvpr", standalone_mode=False))
        if code == 130:  # typer turns Ctrl-C into a return value in non-standalone mode
            print("interrupted", file=sys.stderr)
        return code
    except (UserError, ModelInputError, SimInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as err:
        print(f"error: a file is not UTF-8 text ({err.reason} at byte {err.start}); "
              f"allowed: UTF-8 YAML / JSON / CSV text", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        what = {FileNotFoundError: "file not found", IsADirectoryError: "is a folder, expected a file",
                NotADirectoryError: "a parent of the path is a file, not a folder",
                PermissionError: "permission denied"}[type(err)]
        print(f"error: {what}: {err.filename or err}", file=sys.stderr)
        return 2
    except (typer.Exit, SystemExit) as err:
        code = getattr(err, "exit_code", None)
        return _exit_code(code if code is not None else getattr(err, "code", 0))
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, _click_errors()):
            if type(err).__name__ == "NoArgsIsHelpError":  # help was printed already
                return 2
            msg = err.format_message() if hasattr(err, "format_message") else str(err)
            ctx = getattr(err, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None and ctx.command_path else ""
            print(f"error: {msg}{where}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
