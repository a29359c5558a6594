"""`rig config check FILE`: validate a rig configuration and everything it points at."""

from __future__ import annotations

import sys

NAME = "config"
HELP = "validate a rig configuration file (rig config check FILE)"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = sub.add_parser("check", help="check FILE; exit 0 when valid, 1 with one line per problem")
    c.add_argument("file", help="rig configuration YAML")
    s = sub.add_parser("show", help="print the configuration with every default filled in")
    s.add_argument("file", help="rig configuration YAML")


def run(args) -> int:
    import yaml

    from ..config import check_config, load_config
    from ..foundation.errors import ConfigError

    try:
        if args.action == "check":
            cfg = check_config(args.file)
            print(f"{args.file}: OK ({len(cfg.cameras)} camera(s): "
                  f"{', '.join(c.name for c in cfg.cameras)}; model {cfg.model_dir})")
        else:
            cfg = load_config(args.file)
            print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    return 0
