"""The `datadiet` command line: a thin skin over the library (one module per stage)."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from datadiet_cli import __version__
from datadiet_cli.commands import balance, ingest, prune
from datadiet_cli.commands import cluster as cluster_command
from datadiet_cli.commands import evaluate as evaluate_command
from datadiet_cli.commands import report as report_command
from datadiet_cli.commands import score as score_command
from datadiet_cli.commands import theory as theory_command
from datadiet_cli.commands import train as train_command
from datadiet_cli.console import error_line, interrupted_line, reset_interrupt_notes
from datadiet_cli.distributed import from_environment
from datadiet_cli.errors import DatadietError, Interrupted, LaunchError
from datadiet_cli.io.clock import recorded_time
from datadiet_cli.io.files import outputs_written, reset_outputs

try:  # typer >= 0.29 vendors its own click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_errors


class DatadietGroup(TyperGroup):
    """Turns every failure into one red line on stderr and an exit code: 1 for bad input, 2 for usage,
    130 for Ctrl-C."""

    def invoke(self, ctx: Any) -> Any:
        # typer turns a KeyboardInterrupt raised inside a command into a silent exit 130; catch it first.
        reset_outputs()
        reset_interrupt_notes()
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            interrupted = Interrupted(interrupted_line(outputs_written()))
            # torchrun passes Ctrl-C to every rank: rank 0 says what is on disk, once.
            interrupted.silent_here = from_environment().rank != 0  # type: ignore[attr-defined]
            raise interrupted from None

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as error:
            if error.format_message().strip():  # rich mode has already printed the help itself
                typer.echo(error.format_message())
            sys.exit(2)
        except click_errors.UsageError as error:
            command = error.ctx.command_path if error.ctx else "datadiet"
            error_line(f"{error.format_message()} (see '{command} --help')")
            sys.exit(2)
        except click_errors.ClickException as error:
            error_line(error.format_message())
            sys.exit(error.exit_code)
        except (typer.Abort, KeyboardInterrupt):  # Ctrl-C while parsing, or at a prompt
            error_line(interrupted_line(outputs_written()))
            sys.exit(130)
        except DatadietError as error:
            if not getattr(error, "silent_here", False):  # under torchrun, rank 0 prints an error all ranks share
                error_line(str(error))
            sys.exit(error.exit_code)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=DatadietGroup,
    name="datadiet",
    help=(
        "Make training sets smaller without making models worse (Sorscher et al., NeurIPS 2022).\n\n"
        "Every step reads and writes a Parquet manifest, one row per example, so a pruning "
        "pipeline chains as shell steps: ingest -> score/cluster -> prune -> balance -> train -> evaluate -> report. "
        "`theory` computes the paper's analytic model, to size a pruning budget before training.\n\n"
        "Example: datadiet ingest builtin:digits -o digits.parquet && "
        "datadiet prune digits.parquet -o half.parquet --keep random --fraction 0.5"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"datadiet {__version__}")
        raise typer.Exit()


# The commands that run as one job over several processes under torchrun (docs/distributed.md).
DISTRIBUTED_COMMANDS = ("train", "score", "cluster", "evaluate")


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Root options."""
    recorded_time()  # a malformed SOURCE_DATE_EPOCH is refused before any work, not after hours of it
    if from_environment().distributed and ctx.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        raise LaunchError(
            f"{ctx.invoked_subcommand} runs in one process: run it without torchrun "
            f"(torchrun runs {', '.join(DISTRIBUTED_COMMANDS)})"
        )


# In pipeline order, which is the order `datadiet --help` lists them in.
app.command("ingest")(ingest.ingest)
app.command("score")(score_command.score)
app.command("cluster")(cluster_command.cluster)
app.command("prune")(prune.prune)
app.command("balance")(balance.balance)
app.command("train")(train_command.train)
app.command("evaluate")(evaluate_command.evaluate)
app.command("report")(report_command.report)
app.add_typer(theory_command.app, name="theory")


def main() -> None:
    app()
