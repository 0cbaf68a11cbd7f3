"""`rigctl lab`: bring the local test lab (systemd-nspawn Debian hosts) up and down.

    rigctl lab up N [--docker]   start hosts h1..hN (10.213.0.11..) on bridge labbr0
    rigctl lab down              stop the lab and remove everything it made
    rigctl lab status [--json]   hosts, addresses, whether ssh answers
    rigctl lab restart HOST      reboot one host on the same disk (h2: its services come back)

Exit codes:
  0  done
  1  the lab failed to come up or go down (the reason goes to stderr)
  2  usage error
  4  the lab cannot run on this machine (not root, no systemd-nspawn, ...)
"""

from __future__ import annotations

import json
import re
import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LAB_UNAVAILABLE = 4


def register(subparsers):
    parser = subparsers.add_parser(
        "lab",
        help="local test lab: Debian hosts in systemd-nspawn (up N / down / status / restart HOST)",
        description=(
            "Start throw-away Debian bookworm hosts h1..hN on this machine "
            "(systemd-nspawn, real systemd, 10.213.0.11.. on bridge labbr0, apt "
            "through a local apt-cacher-ng) and write an Ansible inventory and an "
            "ssh_config into LAB_DIR (default /tmp/rigctl-lab). Needs root. Exit "
            "code 4 means the lab cannot run on this machine."),
    )
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION")
    p_up = sub.add_parser("up", help="start N hosts (default 2)")
    p_up.add_argument("n", nargs="?", type=int, default=2, metavar="N", help="number of hosts (1-40)")
    p_up.add_argument("--docker", action="store_true",
                      help="let the hosts run a Docker engine inside")
    sub.add_parser("down", help="stop the lab and clean up (safe when nothing is up)")
    p_re = sub.add_parser("restart", help="reboot one host (its disk is kept) and wait until ssh answers")
    p_re.add_argument("host", metavar="HOST", help="host name (h1, h2, ...)")
    p_st = sub.add_parser("status", help="show the lab's hosts")
    p_st.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(func=run, lab_command=None)
    parser.set_defaults(_lab_parser=parser)
    return parser


def _err(msg: str) -> None:
    sys.stderr.write(f"rigctl lab: {msg}\n")


def _print_status(st: dict) -> None:
    if not st["up"]:
        print(f"lab: down ({st['lab_dir']})")
        return
    print(f"lab: up ({st['lab_dir']}){'  [docker]' if st.get('docker') else ''}")
    for name, h in st["hosts"].items():
        print(f"  {name:<4} {h['address']:<13} ssh {'up' if h['ssh'] else 'unreachable'}")
    print(f"  apt proxy   {st['proxy']}")
    print(f"  inventory   {st['inventory']}")
    print(f"  ssh_config  {st['ssh_config']}   (ssh -F {st['ssh_config']} h1)")


def run(args) -> int:
    from provisioner import lab

    action = getattr(args, "lab_command", None)
    if action is None:
        parser = getattr(args, "_lab_parser", None)
        if parser is not None:
            parser.print_usage(sys.stderr)
        _err("missing action: up N | down | status | restart HOST")
        return EXIT_USAGE
    if action == "status":
        st = lab.status()
        if getattr(args, "json", False):
            print(json.dumps(st, indent=2, sort_keys=True))
        else:
            _print_status(st)
        return EXIT_OK

    if action == "restart":
        # argument checks first: they need neither root nor a running lab
        st = lab.status()
        if not re.fullmatch(r"h[0-9]+", args.host):
            _err(f"restart: a lab host is named like h1, not {args.host!r}")
            return EXIT_USAGE
        if not st["hosts"]:
            _err(f"restart {args.host}: the lab is not up in {st['lab_dir']} (rigctl lab up N first)")
            return EXIT_FAILED
        if args.host not in st["hosts"]:
            _err(f"restart: no host {args.host} in the lab (hosts: {', '.join(st['hosts'])})")
            return EXIT_USAGE

    n = getattr(args, "n", 2)
    if action == "up" and not 1 <= n <= 40:
        _err(f"N must be between 1 and 40, not {n}")
        return EXIT_USAGE
    ok, why = lab.can_run_lab()
    if not ok:
        _err(f"lab unavailable: {why}")
        return EXIT_LAB_UNAVAILABLE
    try:
        if action == "up":
            st = lab.up(n, docker=args.docker, stream=True)
            _print_status(st)
        elif action == "down":
            lab.down(stream=True)
        elif action == "restart":
            _print_status(lab.restart(args.host, stream=True))
        else:  # pragma: no cover - argparse restricts the choices
            _err(f"unknown action {action!r}")
            return EXIT_USAGE
    except lab.LabError as exc:
        _err(str(exc))
        return EXIT_LAB_UNAVAILABLE if getattr(exc, "returncode", None) == 3 else EXIT_FAILED
    return EXIT_OK
