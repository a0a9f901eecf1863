"""The `lungcad` command: registration of the command groups, logging and --version."""

from __future__ import annotations

import logging
import warnings
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from lungcad import __version__
from lungcad.cli import benchmark, cv, data, params
from lungcad.cli.common import fail
from lungcad.cli.detect import detect, evaluate_detection
from lungcad.cli.doctor import doctor
from lungcad.cli.evaluate import evaluate
from lungcad.cli.explain import explain
from lungcad.cli.promote import promote
from lungcad.cli.serve import query, serve
from lungcad.cli.train import train
from lungcad.cli.tune import apply_params, tune

try:  # the click that typer runs on: its own copy in newer typer releases
    from typer import _click as typer_click
except ImportError:  # typer releases that run on click itself
    typer_click = click
#: What click and typer raise to end a command on purpose (a usage error, --help, an exit):
#: click answers them itself.
CLICK_OUTCOMES = (
    click.exceptions.Exit,
    click.ClickException,
    click.exceptions.Abort,
    typer_click.exceptions.ClickException,
    typer.Exit,
    typer.Abort,
)


class LungcadGroup(TyperGroup):
    """Every error lungcad raises on purpose, in any command, is one ``error:`` line and
    exit 2; anything else is a bug: one line and exit 1, its traceback with ``--verbose``."""

    def invoke(self, ctx: click.Context):
        from lungcad.errors import LungcadError

        try:
            return super().invoke(ctx)
        except LungcadError as exc:
            fail(str(exc))
        except CLICK_OUTCOMES:  # usage errors, --help, exits: click answers them
            raise
        except Exception as exc:
            logging.getLogger("lungcad").debug("unexpected error", exc_info=True)
            text = " ".join(str(exc).split())[:300]
            fail(
                f"unexpected {type(exc).__name__}: {text} (a bug in lungcad: run again with "
                "`lungcad --verbose ...` for the traceback, and report it)",
                code=1,
            )


app = typer.Typer(
    name="lungcad",
    cls=LungcadGroup,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Lung nodule detection and malignancy CAD on LIDC-IDRI: data, training, tracking.",
)
app.add_typer(data.app, name="data")
app.add_typer(params.app, name="params")
app.add_typer(cv.app, name="cv")
app.add_typer(benchmark.app, name="benchmark")
app.command()(train)
app.command()(evaluate)
app.command()(explain)
app.command()(detect)
app.command(name="evaluate-detection")(evaluate_detection)
app.command()(tune)
app.command(name="apply-params")(apply_params)
app.command()(promote)
app.command()(serve)
app.command()(query)
app.command()(doctor)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lungcad {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """lungcad: LIDC-IDRI CT -> cubes -> multi-task 3D CNN, tracked with DVC and MLflow."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Their INFO lines narrate every module copied and request sent; warnings still show.
    for chatty in ("highdicom", "dicomweb_client"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not verbose:
        # pydicom warns of every malformed value it reads (one line per file of a hostile
        # series); what lungcad makes of the header is said in its own lines.
        # (a filter, not a level: pydicom sets its logger's level when it is imported)
        logging.getLogger("pydicom").addFilter(lambda record: record.levelno >= logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")


if __name__ == "__main__":
    app()
