"""Commands of this domain, added to the `pooling-pipeline` app by `register`."""

import typer


def register(app: typer.Typer) -> None:
    """Add this domain's commands to `app`."""
