"""The ``tatvpr`` command line.

Each area of the flow registers its commands from its own module under
``tatvpr_hw/commands/`` (so the parts grow without editing one big file). Expected errors
(:class:`UserError`, :class:`SimInputError`) print one line and exit with status 2.
"""

from __future__ import annotations

import logging
import sys

import typer

from sim.errors import SimInputError
from tatvpr_hw.commands import data, demo, dse, evaluation, export_fw, export_hw, models, rtl, simulate, training
from tatvpr_hw.errors import UserError

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

for _module in (models, data, training, evaluation, simulate, dse, export_fw, export_hw, rtl, demo):
    _module.register(app, export_app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tatvpr`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # third-party chatter at INFO (faiss' CPU-feature probing, Lightning's tips) hides our progress
    for noisy in ("faiss.loader", "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app(args=argv, standalone_mode=False)
    except (UserError, SimInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"error: file not found: {err.filename or err}", file=sys.stderr)
        return 2
    except typer.Exit as err:
        return err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        return 130
    except Exception as err:  # click usage errors carry their own exit code
        import click
        if isinstance(err, click.ClickException):
            err.show()
            return err.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
