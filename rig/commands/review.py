"""`rig review`: the review terminal (local web page) and its gallery actions."""

from __future__ import annotations

NAME = "review"
HELP = "review diverted items in a local web page; enroll reviewed packaging; roll the gallery back"


def add_arguments(p):
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state", metavar="DIR", help="the rig's state directory")
    where.add_argument("--config", metavar="FILE", help="rig configuration (state dir and model from it); "
                       "default: the demo config")
    add_bind_arguments(p, 8080)
    p.add_argument("--references", metavar="DIR", help="reference images shown beside each crop: DIR/SKU/*.png "
                   "(a dataset's references folder; default: the gallery's sources, then crops reviewed as fine)")
    p.add_argument("--model", metavar="MODEL_DIR", help="model directory whose gallery enroll/rollback change "
                   "(default: the config's model)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--enroll", metavar="SKU", help="enroll the SKU's reviewed 'not damaged' / 'packaging "
                     "changed' images as references, then exit")
    act.add_argument("--rollback", nargs="?", const="", metavar="VERSION",
                     help="make gallery VERSION current (no VERSION: undo the last change), then exit")
    act.add_argument("--versions", action="store_true", help="list the gallery versions, then exit")


def add_bind_arguments(p, port: int) -> None:
    """--port, --host (loopback by default) and --token-file: shared by `rig review` and `rig view`."""
    p.add_argument("--port", type=int, default=port, help=f"port (default {port})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only; "
                   "::1 for IPv6). Beyond loopback an access token is required: RIG_REVIEW_TOKEN or --token-file")
    p.add_argument("--token-file", metavar="FILE", help="file holding the access token (instead of the "
                   "RIG_REVIEW_TOKEN environment variable); required when --host is not loopback")


def _model_dir(args):
    from pathlib import Path

    from ..config import DEMO_CONFIG, load_config

    if args.model:
        return Path(args.model)
    if args.state and not args.config:
        return None
    return load_config(args.config or DEMO_CONFIG).model_dir


def _catalogue(args) -> str | None:
    """The reference store of the rig's config (gallery.store), where enrollments also go."""
    if not args.config:
        return None
    from ..config import load_config

    g = load_config(args.config).gallery
    return g.store if g is not None else None


def _token(args) -> str | None:
    import os
    from pathlib import Path

    from ..foundation.errors import ConfigError
    from ..review.guard import TOKEN_ENV

    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc}") from None
        if len(token) < 16:
            raise ConfigError(f"--token-file {args.token_file}: the token must be at least 16 characters")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token and len(token) < 16:
        raise ConfigError(f"{TOKEN_ENV}: the token must be at least 16 characters")
    return token or None


def run(args) -> int:
    from pathlib import Path

    from ..foundation.errors import ConfigError, ModelError
    from ..review import enroll
    from ..review.server import ReviewServer
    from ..review.store import ReviewStore
    from .status import state_dir_from

    state = state_dir_from(args)
    if not (args.state or args.config) and not (state / "events.db").is_file():
        from ..foundation.errors import RigError

        raise RigError(f"nothing to review in {state} (where `rig demo` keeps its state): run `rig demo` first, "
                       "or point --state DIR / --config FILE at a rig's state")
    model_dir = _model_dir(args)
    if args.enroll or args.rollback is not None or args.versions:
        if model_dir is None:
            raise ModelError("give --model MODEL_DIR (or --config) for gallery actions")
        if args.versions:
            for v in enroll.versions(model_dir):
                print(f"{v['version']}{'  (current)' if v['current'] else ''}  {v['created']}  {v['note']}")
            return 0
        store = ReviewStore(state)
        try:
            if args.enroll:
                r = enroll.enroll_reviewed(store, model_dir, args.enroll, _catalogue(args))
                print(f"enrolled {r['enrolled']} image(s) of {len(r['items'])} item(s) for {r['sku']}: "
                      f"gallery {r['version']}")
            else:
                r = enroll.rollback(store, model_dir, args.rollback or None)
                print(f"gallery rolled back to {r['version']}")
        finally:
            store.close()
        return 0
    if args.references and not Path(args.references).is_dir():
        raise ConfigError(f"--references {args.references}: no such folder (expected DIR/SKU/*.png)")
    server = ReviewServer(state, port=args.port, host=args.host, model_dir=model_dir, token=_token(args),
                          references=args.references, catalogue=_catalogue(args))
    if server.guard.token:
        print(f"listening on {args.host} beyond loopback: open {server.url}?token=TOKEN once per browser")
    print(f"review terminal for {state}: {server.url}  (Ctrl-C stops)", flush=True)
    server.serve_until_interrupted()
    return 0
