"""`python -m app.security`: make a key for API_KEYS, or hash an existing one.

python -m app.security new-key --name web-app --scope ingest --event-type attempt
python -m app.security hash < key.txt
"""

from __future__ import annotations

import argparse
import json
import sys

from app.security.keys import Scope, generate_key, hash_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.security", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new-key", help="a new random key and its API_KEYS entry")
    new.add_argument("--name", required=True)
    new.add_argument("--scope", action="append", choices=[s.value for s in Scope], required=True)
    new.add_argument(
        "--event-type", action="append", help="a type the key may post (or a prefix: workflow.*); repeatable"
    )
    new.add_argument("--rate-limit", type=float, help="events per second for this key")
    commands.add_parser("hash", help="the SHA-256 of a key read from standard input")
    args = parser.parse_args(argv)

    if args.command == "hash":
        print(hash_key(sys.stdin.readline().strip()))
        return 0
    key = generate_key()
    entry: dict[str, object] = {"name": args.name, "sha256": hash_key(key), "scopes": args.scope}
    if args.event_type:
        entry["event_types"] = args.event_type
    if args.rate_limit:
        entry["rate_limit"] = args.rate_limit
    print(f"key (give it to the client; it is not stored anywhere): {key}", file=sys.stderr)
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
