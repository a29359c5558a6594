"""`rig divert ...`: the controller emulator and checks of a divert link."""

from __future__ import annotations

import json
import time

NAME = "divert"
HELP = "divert link: run the controller emulator on a pty, or ping a controller"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = sub.add_parser("emulate", help="run the gate controller emulator on a new pty "
                                       "(prints 'PORT <path>'; stop with SIGTERM/Ctrl-C)")
    e.add_argument("--port", metavar="LINK", help="also create a symlink LINK -> the pty path")
    e.add_argument("--port-file", metavar="FILE", help="write the pty path to FILE")
    e.add_argument("--log", metavar="FILE", help="JSON-lines gate log (fired, late, failsafe)")
    e.add_argument("--speed", type=float, default=0.5, help="belt speed in m/s (default 0.5)")
    e.add_argument("--counts-per-m", type=float, default=1000.0,
                   help="encoder counts per metre (default 1000)")
    e.add_argument("--gates", default="1", help="comma-separated gate ids (default 1)")
    e.add_argument("--failsafe", choices=["divert_all", "stop_belt"], default="divert_all",
                   help="what to do when host heartbeats stop (default divert_all)")
    e.add_argument("--heartbeat-ms", type=float, default=50.0,
                   help="controller heartbeat period (default 50 ms)")
    e.add_argument("--heartbeat-timeout", type=float, default=1.0,
                   help="seconds without a host heartbeat before the fail-safe (default 1.0)")
    e.add_argument("--drop", type=float, default=0.0, help="fault: drop probability per frame")
    e.add_argument("--corrupt", type=float, default=0.0,
                   help="fault: corruption probability per frame")
    e.add_argument("--delay-ms", type=float, default=0.0, help="fault: delay every reply")
    e.add_argument("--silence-after", type=float, default=None, metavar="S",
                   help="fault: stop reading and answering S seconds after start")
    e.add_argument("--silence-for", type=float, default=None, metavar="S",
                   help="fault: ... for S seconds (default: for good); SIGUSR1 toggles silence")
    e.add_argument("--seed", type=int, default=None, help="seed of the fault injection")

    g = sub.add_parser("ping", help="open a divert link, wait for the controller, print its state")
    g.add_argument("--url", required=True, help="port: /dev/ttyUSB0, a pty path, modbus-rtu://...")
    g.add_argument("--baud", type=int, default=115200)
    g.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    g.add_argument("--divert", type=int, metavar="ITEM", default=None,
                   help="also send one DIVERT for item ITEM, 0.5 m ahead of the belt, gate --gate")
    g.add_argument("--gate", type=int, default=1)
    g.add_argument("--speed", type=float, default=None,
                   help="belt speed for backends without a position report (modbus)")

    s = sub.add_parser("soak", help="send many diverts to an emulator injecting faults; exit 1 "
                                    "if any divert was lost, reported twice or fired twice")
    s.add_argument("--items", type=int, default=1000)
    s.add_argument("--corrupt", type=float, default=0.05, help="default 0.05")
    s.add_argument("--drop", type=float, default=0.01, help="default 0.01")
    s.add_argument("--speed", type=float, default=1.0, help="belt m/s (default 1.0)")
    s.add_argument("--ahead", type=float, default=0.15,
                   help="metres between decision and gate (default 0.15)")
    s.add_argument("--seed", type=int, default=1)


def _soak(args) -> int:
    from ..divert.soak import soak

    out = soak(items=args.items, corrupt=args.corrupt, drop=args.drop, speed_mps=args.speed,
               ahead_m=args.ahead, seed=args.seed)
    print(json.dumps(out, indent=2))
    lost = out["unreported"] + out["reported_twice"] + out["fired_twice"] + out["acked_not_fired"]
    return 0 if lost == 0 else 1


def _emulate(args) -> int:
    from ..divert.emulator import Faults, run_emulator
    from ..foundation.errors import DeviceError

    try:
        gates = tuple(int(g) for g in args.gates.split(",") if g.strip())
    except ValueError:
        raise DeviceError(f"--gates {args.gates!r}: expected comma-separated integers") from None
    faults = Faults.from_dict({"drop": args.drop, "corrupt": args.corrupt,
                               "delay_ms": args.delay_ms, "silence_after_s": args.silence_after,
                               "silence_for_s": args.silence_for, "seed": args.seed})
    counters = run_emulator(port_link=args.port, port_file=args.port_file, speed_mps=args.speed,
                            counts_per_m=args.counts_per_m, gates=gates, failsafe=args.failsafe,
                            heartbeat_s=args.heartbeat_ms / 1000.0,
                            heartbeat_timeout_s=args.heartbeat_timeout, faults=faults,
                            log_path=args.log)
    print(json.dumps({"stopped": True, **counters}), flush=True)
    return 0


def _ping(args) -> int:
    from ..divert.base import open_link

    link = open_link(args.url, baud=args.baud, speed_mps=args.speed)
    try:
        if not link.wait_ready(args.timeout):
            print(f"{args.url}: no controller heartbeat within {args.timeout} s "
                  f"(last error: {link.last_error})")
            return 1
        t = time.monotonic()
        out = {"url": args.url, "position": link.position_at(t), "speed_mps": link.speed_mps,
               "healthy": link.healthy}
        if args.divert is not None:
            done = []
            counts_ahead = int(0.5 * link.counts_per_m)
            link.divert(args.divert, args.gate, link.position_at(t) + counts_ahead,
                        deadline=t + 1.0, on_result=done.append)
            end = time.monotonic() + 2.0
            while not done and time.monotonic() < end:
                time.sleep(0.01)
            out["divert"] = done[0].__dict__ | {"outcome": done[0].outcome} if done else None
        out["counters"] = dict(link.counters)
        print(json.dumps(out, indent=2))
        return 0
    finally:
        link.close()


def run(args) -> int:
    return {"emulate": _emulate, "ping": _ping, "soak": _soak}[args.action](args)
