"""The ``esmd`` command: run, validate, schema, demo; the operator tools test-filter,
redrive and status (service/ops/)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from service.config import ConfigError, EsmdConfig, MappingConfig, json_schema, load_config

DEFAULT_CONFIG = os.environ.get("ESMD_CONFIG", "/etc/esmd/esmd.yaml")


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop when it is installed, else on asyncio's own loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _load(path: str) -> EsmdConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    print(
        f"{args.config}: OK ({len(config.mappings)} mapping(s): "
        f"{', '.join(m.Name for m in config.mappings)})"
    )
    return 0


def cmd_schema(_: argparse.Namespace) -> int:
    sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from service.daemon import Daemon, unsupported
    from service.logs import configure_logging

    config = _load(args.config)
    if config is None:
        return 2
    levels = {
        m.Name: m.LoggingConfig.SystemLogLevel
        for m in config.mappings
        if m.LoggingConfig is not None and m.LoggingConfig.SystemLogLevel is not None
    }
    configure_logging(args.log_level, args.log_json, levels)
    problems = unsupported(config)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2

    from service.workers import SOLO, Supervisor, Worker, worker_count

    worker = Worker.from_env()
    if worker is SOLO and worker_count(config) > 1:
        argv = ["run", "-c", args.config, "--log-level", args.log_level]
        if args.log_json is not None:
            argv.append("--log-json" if args.log_json else "--no-log-json")
        api = None
        if config.api is not None:
            from service.api.supervised import SupervisedApi

            api = SupervisedApi(config)
        return int(run_async(Supervisor(config, args.config, argv, api).run()))

    if worker is not SOLO:  # every line a worker logs says which one
        import structlog

        structlog.contextvars.bind_contextvars(worker=worker.index)

    from service.gctune import tune_for_throughput

    async def main() -> None:
        await Daemon(config, worker=worker).run()

    tune_for_throughput()
    run_async(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service.demo import run_demo
    from service.logs import configure_logging

    configure_logging("WARNING", args.log_json)
    return int(run_async(run_demo(args.bootstrap, args.seconds, args.listen)))


def _mapping(config: EsmdConfig, name: str) -> MappingConfig | None:
    for m in config.mappings:
        if m.Name == name:
            return m
    names = ", ".join(m.Name for m in config.mappings)
    print(f"no mapping {name!r} in the config (it has: {names})", file=sys.stderr)
    return None


def cmd_test_filter(args: argparse.Namespace) -> int:
    from service.ops.filtering import FilterCheck, read_lines, render, render_json
    from service.ops.samples import SampleError, samples_for

    config = _load(args.config)
    cfg = _mapping(config, args.mapping) if config is not None else None
    if config is None or cfg is None:
        return 2
    try:
        samples = samples_for(cfg, config, args.base64)
        check = FilterCheck(cfg, samples)
        if args.from_source is not None:
            raws = run_async(samples.read_source(args.from_source))
            verdicts = [check.verdict("source", raw) for raw in raws]
        else:
            stream = sys.stdin if args.events == "-" else open(args.events)  # noqa: SIM115
            with stream:
                verdicts = [check.verdict(w, raw) for w, raw in read_lines(stream, samples)]
    except (SampleError, OSError) as exc:
        print(f"esmd test-filter: {exc}", file=sys.stderr)
        return 2
    if args.json:
        render_json(verdicts)
    else:
        render(verdicts, check.patterns)
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    from service.logs import configure_logging
    from service.ops.redrive import Redrive, stderr_progress

    configure_logging(args.log_level, None)  # logs to stderr: stdout is the report
    config = _load(args.config)
    cfg = _mapping(config, args.mapping) if config is not None else None
    if config is None or cfg is None:
        return 2
    redrive = Redrive(
        cfg,
        config,
        args.source,
        dry_run=args.dry_run,
        limit=args.limit,
        retries=args.retries,
        out=sys.stdout,
        progress=stderr_progress,
    )
    try:
        summary = run_async(redrive.run())
    except ValueError as exc:
        print(f"esmd redrive: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nesmd redrive: interrupted; what was not removed stays to rerun", file=sys.stderr)
        return 130
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(summary.line(args.dry_run))
    return 0 if summary.failed == summary.unreadable == 0 else 1


def cmd_status(args: argparse.Namespace) -> int:
    import time

    import aiohttp

    from service.ops.status import render, tables

    config = _load(args.config)
    if config is None:
        return 2
    secret = config.server.auth_token
    token = args.token or (secret.get_secret_value() if secret is not None else None)

    async def once() -> str:
        return render(await tables(config, args.url, token, args.interval))

    if args.watch is None:
        try:
            print(run_async(once()), end="")
        except (aiohttp.ClientError, PermissionError, TimeoutError) as exc:
            print(f"esmd status: {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
            return 1
        return 0

    async def watch() -> None:
        while True:
            try:
                text = await once()
            except (aiohttp.ClientError, PermissionError, TimeoutError) as exc:
                text = f"{args.url}: {exc or type(exc).__name__}\n"
            stamp = time.strftime("%H:%M:%S")
            head = f"esmd status  {args.url or args.config}  {stamp}  (every {args.watch:g} s)"
            sys.stdout.write(f"\x1b[H\x1b[2J{head}\n\n{text}")
            sys.stdout.flush()
            await asyncio.sleep(args.watch)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the watch
        run_async(watch())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esmd", description="Event source mapping daemon")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the mappings of a config file")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    run.add_argument("--log-level", default=os.environ.get("ESMD_LOG_LEVEL", "INFO"))
    run.add_argument("--log-json", action=argparse.BooleanOptionalAction, default=None)
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a config file; exit 0 when valid, 2 when not")
    val.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    val.set_defaults(func=cmd_validate)

    sch = sub.add_parser("schema", help="print the JSON Schema of the config file")
    sch.set_defaults(func=cmd_schema)

    demo = sub.add_parser("demo", help="run a sample Kafka mapping end to end on a local broker")
    demo.add_argument("--bootstrap", default=os.environ.get("ESMD_DEMO_BOOTSTRAP"))
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long")
    demo.add_argument("--listen", default="127.0.0.1:9464")
    demo.add_argument("--log-json", action=argparse.BooleanOptionalAction, default=None)
    demo.set_defaults(func=cmd_demo)

    tf = sub.add_parser(
        "test-filter",
        help="show which sample records a mapping's FilterCriteria keeps, and by which filter",
    )
    tf.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    tf.add_argument("--mapping", required=True)
    tf.add_argument("events", nargs="?", default="-", help="JSON lines, one raw record each")
    tf.add_argument(
        "--from-source", type=int, metavar="N", help="the last N records of the real source"
    )
    tf.add_argument("--base64", action="store_true", help="string payloads are base64")
    tf.add_argument("--json", action="store_true", help="one JSON verdict a line")
    tf.set_defaults(func=cmd_test_filter)

    rd = sub.add_parser(
        "redrive",
        help="invoke a mapping's target again with the records its OnFailure destination holds",
    )
    rd.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    rd.add_argument("--mapping", required=True)
    rd.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="DESTINATION",
        help="an SQS queue or S3 bucket ARN, or kafka://<topic>",
    )
    rd.add_argument("--dry-run", action="store_true", help="say what would be redriven; no invoke")
    rd.add_argument("--limit", type=int, help="at most this many invocation records")
    rd.add_argument(
        "--retries", type=int, default=0, help="retries of a batch that fails again (default 0)"
    )
    rd.add_argument("--log-level", default="WARNING")
    rd.set_defaults(func=cmd_redrive)

    st = sub.add_parser("status", help="a table per mapping: state, pollers, lag, rates, errors")
    st.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    st.add_argument("--url", help="a running daemon's server.listen, e.g. http://127.0.0.1:9464")
    st.add_argument("--token", help="bearer token (default: the config's server.auth_token)")
    st.add_argument(
        "--interval", type=float, default=1.0, help="seconds between the two /metrics samples"
    )
    st.add_argument(
        "--watch", type=float, nargs="?", const=2.0, metavar="SECONDS", help="redraw like top"
    )
    st.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
