"""Command line: `python -m livekit_emulator --port 7880 [--keys devkey:SECRET]`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import warnings

from jwt.warnings import InsecureKeyLengthWarning

from .server import DEFAULT_KEYS, serve


def _key_pair(value: str) -> tuple[str, str]:
    key, sep, secret = value.partition(":")
    if not sep or not key or not secret:
        raise argparse.ArgumentTypeError("expected KEY:SECRET")
    return key, secret


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m livekit_emulator",
        description="A LiveKit server stand-in for tests and local runs (no media).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7880, help="Twirp API and control API (0: any free port)")
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="control-only listener that survives the 'down' fault (default: --port + 1; 0: any free port)",
    )
    parser.add_argument(
        "--keys",
        type=_key_pair,
        action="append",
        metavar="KEY:SECRET",
        help="API key and secret; repeatable (default: devkey with a 32+ byte secret, so PyJWT clients do not warn)",
    )
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument(
        "--control-token",
        default=None,
        help="also allow non-loopback control clients presenting this bearer token",
    )
    parser.add_argument(
        "--no-response-after",
        type=float,
        default=3.0,
        help="seconds before a 503 for a room or participant the server does not have (real: 3)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    keys = dict(args.keys or DEFAULT_KEYS)
    if any(len(secret.encode()) < 32 for secret in keys.values()):
        logging.getLogger("livekit_emulator").warning(
            "an API secret is shorter than 32 bytes; PyJWT clients will warn on every token"
        )
    # The operator chose the key: one warning above instead of one per verified token.
    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    control_port = args.control_port if args.control_port is not None else (args.port + 1 if args.port else 0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                keys=keys,
                host=args.host,
                port=args.port,
                control_port=control_port,
                webhook_url=args.webhook_url,
                control_token=args.control_token,
                no_response_after=args.no_response_after,
            )
        )


if __name__ == "__main__":
    main()
