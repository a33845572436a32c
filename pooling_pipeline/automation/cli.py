"""Commands of this domain, added to the `pooling-pipeline` app by `register`."""

from __future__ import annotations

import signal

import typer


def demo(
    no_ui: bool = typer.Option(False, "--no-ui", help="stop after materialising (CI, tests)"),
    port: int = typer.Option(3000, "--port", help="port of the Dagster UI (127.0.0.1)"),
    incumbent: bool = typer.Option(True, "--incumbent/--no-incumbent",
                                   help="start the local Caikit incumbent, so the benchmark compares against it"),
) -> None:
    """Stack up, materialise the whole local catalog, print endpoints and verdicts, then open the Dagster UI."""
    from pooling_pipeline.automation.demo import (
        DemoError,
        ensure_dagster_home,
        materialize_local_catalog,
        start_ui,
        verdict_table,
        wait_for_ui,
    )
    from pooling_pipeline.stack.layout import StackLayout
    from pooling_pipeline.stack.manager import stack_up
    from pooling_pipeline.stack.processes import StackError, port_in_use

    home = ensure_dagster_home()
    typer.echo(f"DAGSTER_HOME {home}")
    if not no_ui and port_in_use(port):
        typer.echo(f"port {port} is in use: pass --port with a free one (or stop what listens there)", err=True)
        raise typer.Exit(1)
    try:
        stack_up(StackLayout.default(), with_incumbent=incumbent, report=lambda line: typer.echo(f"  {line}"))
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(1) from None

    import dagster as dg

    # Imported after `stack up`: the definitions read the stack's state file for the S3/hub settings.
    instance = dg.DagsterInstance.get()
    try:
        result = materialize_local_catalog(instance, report=typer.echo)
    except DemoError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None

    typer.echo("\nendpoints (OpenAI-compatible, vLLM " + result.vllm_version + ")")
    for name, url in result.endpoints.items():
        typer.echo(f"  {name:<28} {url}")
    typer.echo("\nverdicts\n" + verdict_table(result.rows))
    if result.failed:
        typer.echo("\nruns that failed (their models are in the table with the reason): " + ", ".join(result.failed))
    if no_ui:
        return

    url = f"http://127.0.0.1:{port}"
    log = home / "dagster-dev.log"
    proc = start_ui(port, log_path=log)
    try:
        wait_for_ui(url, proc)
    except DemoError as exc:
        proc.terminate()
        typer.echo(f"{exc} ({log})", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"\nDagster UI: {url}   (asset graph: {url}/asset-groups, report: {url}/assets/readiness_report)")
    typer.echo(f"log: {log}; Ctrl-C stops the UI (the stack keeps running: `pooling-pipeline stack down`)")
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)  # dagster dev stops its webserver and daemon on SIGINT
        proc.wait(timeout=30)


def register(app: typer.Typer) -> None:
    """Add this domain's commands to `app`."""
    app.command("demo")(demo)
