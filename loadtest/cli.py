"""`surge loadtest`: its flags, registered on the `surge` command line by ``register``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import uvloop

from loadtest import renewals
from loadtest.generator import ClientPolicy
from loadtest.profiles import Arrivals, Profile, ProfileName
from loadtest.run import LoadTestConfig, passed, print_summary, run_load_test
from loadtest.traffic import TrafficMix

EPILOG = """profiles (rate is the baseline; defaults per profile in brackets):
  steady    a constant rate                                        [50/s, 60 s]
  ramp      linear from the rate to rate x peak                    [20/s to 200/s, 60 s]
  spike     the rate, with rate x peak for the middle tenth        [30/s, 240/s spike, 60 s]
  deadline  baseline, an exponential surge toward the deadline,
            rate x peak in the deadline window, then a tail        [20/s, 200/s peak, 150 s]
  renewals  --plans recurring plans due at one instant, the processor capped at --rate
            charges/s; reports installments enqueued/s and time to drain, audits exactly once [10000, 100/s]

With no --url it starts Surge itself on a fresh embedded database with a realistic simulated processor
(~250 ms median, long tail, 100 charges/s, rare timeouts; SURGE_PROCESSOR_RATE_PER_S=100); --engine-env
KEY=VALUE changes that engine's settings. It exits 1 when the post-run audit fails.

--chaos (any profile; `--profile deadline --chaos` is the rehearsal of the night) runs two engine workers on one
port and injects, on a schedule drawn from --seed: SIGKILL of a worker (started again), PostgreSQL stopped in
immediate mode (started again), processor outages and slowdowns, timeouts that did and did not charge, webhooks
duplicated, delayed and reordered, refunds (full, partial, concurrent with one key) and disputes. The report draws
the faults over the charts; the audit adds refunds, fees, disputes, webhooks, reconciliation and ledger check.

examples:
  surge loadtest --profile spike
  surge loadtest --profile deadline --chaos --seed 1
  surge loadtest --url http://127.0.0.1:8000 --form-key sk_form_... --profile steady --rate 100 --duration 120"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "loadtest",
        help="rehearse a traffic surge: open-model load, live progress, HTML report and a post-run audit",
        description="Drive Surge with an open-model (arrival-rate) load, then audit the books.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shape = parser.add_argument_group("load")
    shape.add_argument("--profile", choices=[p.value for p in ProfileName], default=ProfileName.DEADLINE.value)
    shape.add_argument("--rate", type=float, help="baseline requests per second (default: per profile)")
    shape.add_argument("--duration", type=float, help="seconds of load (default: per profile)")
    shape.add_argument("--peak", type=float, help="peak multiplier of the baseline (ramp end, spike, deadline)")
    shape.add_argument("--arrivals", choices=[a.value for a in Arrivals], default=Arrivals.UNIFORM.value)
    shape.add_argument("--seed", type=int, default=1, help="traffic and schedule seed (default 1)")
    mix = parser.add_argument_group("traffic mix")
    defaults = TrafficMix()
    mix.add_argument("--decline-share", type=float, default=defaults.decline_share)
    mix.add_argument("--invalid-share", type=float, default=defaults.invalid_share)
    mix.add_argument("--timeout-share", type=float, default=defaults.timeout_share, help="pm_sim_timeout_charged")
    mix.add_argument("--impatient-share", type=float, default=defaults.impatient_share)
    mix.add_argument("--card-testing", type=int, default=defaults.card_testing_requests, help="bot requests")
    chaos = parser.add_argument_group("chaos")
    chaos.add_argument(
        "--chaos",
        action="store_true",
        help="inject faults while the load runs (schedule from --seed): worker SIGKILLs, PostgreSQL crash and "
        "restart, processor outages, slowdowns and timeouts, webhooks duplicated/delayed/reordered, refunds and "
        "disputes; the audit then also proves refunds, fees, disputes, webhooks, reconciliation and ledger check",
    )
    target = parser.add_argument_group("target")
    target.add_argument("--url", help="a running Surge, e.g. http://127.0.0.1:8000 (default: start one)")
    target.add_argument("--form-key", default=os.environ.get("SURGE_FORM_KEY"), help="with --url (SURGE_FORM_KEY)")
    target.add_argument("--campaign", default="demo")
    target.add_argument("--database-url", help="that engine's database, for the audit and time to charge (with --url)")
    target.add_argument("--engine-env", action="append", default=[], metavar="KEY=VALUE", help="for a started engine")
    target.add_argument(
        "--cluster",
        type=int,
        metavar="N",
        help="the scale-out proof (root): primary + replica + PgBouncer + N engine nodes in network namespaces behind "
        "HAProxy, one node killed and one partitioned mid-run (loadtest/cluster.py; its own short deadline profile)",
    )
    client = parser.add_argument_group("client")
    client.add_argument("--connections", type=int, default=ClientPolicy.connections_max)
    client.add_argument("--timeout", type=float, default=ClientPolicy.timeout_s, help="client timeout, seconds")
    output = parser.add_argument_group("output")
    output.add_argument("--report-dir", type=Path, default=Path("loadtest-report"))
    output.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the queue to drain")
    output.add_argument("--progress-interval", type=float, default=5.0, help="seconds between progress lines")
    renewals.add_arguments(parser)
    parser.set_defaults(run=run_command)


def config_from_args(args: argparse.Namespace) -> LoadTestConfig:
    profile = Profile.named(args.profile, args.rate, args.duration, args.peak)
    mix = TrafficMix(
        decline_share=args.decline_share,
        invalid_share=args.invalid_share,
        timeout_share=args.timeout_share,
        impatient_share=args.impatient_share,
        card_testing_requests=args.card_testing,
    )
    environment = {}
    for item in args.engine_env:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ValueError(f"--engine-env needs KEY=VALUE, got {item!r}")
        environment[key] = value
    return LoadTestConfig(
        profile=profile,
        arrivals=Arrivals(args.arrivals),
        seed=args.seed,
        mix=mix,
        policy=_policy(args),
        url=args.url,
        form_key=args.form_key,
        campaign=args.campaign,
        database_url=args.database_url,
        report_folder=args.report_dir,
        drain_timeout_s=args.drain_timeout,
        progress_interval_s=args.progress_interval,
        engine_environment=environment,
        chaos=args.chaos,
    )


def _policy(args: argparse.Namespace) -> ClientPolicy:
    if args.chaos:
        # Under chaos an answer can take a worker restart or a database recovery: forms retry longer, backing off.
        return ClientPolicy(timeout_s=args.timeout, connections_max=args.connections, attempts_max=8, retry_backoff=2.0)
    return ClientPolicy(timeout_s=args.timeout, connections_max=args.connections)


def run_command(args: argparse.Namespace) -> int:
    if args.cluster:
        from loadtest.cluster import ClusterConfig, run_cluster_command

        profile = (
            Profile.named(args.profile, args.rate, args.duration, args.peak) if args.rate else ClusterConfig().profile
        )
        return run_cluster_command(args.cluster, profile, args.seed, args.report_dir, print_summary)
    if args.profile == ProfileName.RENEWALS:
        return renewals.run_command(args)
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"surge loadtest: {error}")
        return 2
    try:
        results = uvloop.run(run_load_test(config))
    except ValueError as error:
        print(f"surge loadtest: {error}")
        return 2
    print_summary(results, config.report_folder)
    return 0 if passed(results) else 1
