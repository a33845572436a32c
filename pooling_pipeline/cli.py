"""`pooling-pipeline`: the user's entry point (stack management, rendering, the demo)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def _register_subcommands() -> None:
    # Each domain owns its commands; they are imported here so `--help` lists them all.
    from pooling_pipeline.automation.cli import register as register_automation
    from pooling_pipeline.serving.cli import register as register_serving
    from pooling_pipeline.stack.cli import register as register_stack

    register_stack(app)
    register_serving(app)
    register_automation(app)


_register_subcommands()

if __name__ == "__main__":
    app()
