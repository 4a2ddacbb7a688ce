"""`python -m openweights.deploy secrets DIR [--force]` or `... bucket` (see the package)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openweights.config import Settings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m openweights.deploy")
    sub = ap.add_subparsers(dest="command", required=True)
    sec = sub.add_parser("secrets", help="write every secret compose.yaml reads into DIR")
    sec.add_argument("directory", type=Path)
    sec.add_argument("--force", action="store_true", help="replace existing secrets")
    sub.add_parser("bucket", help="create OW_S3_BUCKET unless it exists")
    sub.add_parser("init", help="create the streams, migrate Postgres, the default org")
    sub.add_parser("health", help="exit 0 iff NATS (and Postgres, if set) answer")
    args = ap.parse_args(argv)
    if args.command == "secrets":
        from openweights.deploy.secrets import write

        try:
            written = write(args.directory, force=args.force)
        except FileExistsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {len(written)} secrets to {args.directory} (keep it private; "
              "add ow_runpod_api_key yourself)")
        return 0
    settings = Settings()
    if args.command == "init":
        import anyio

        from openweights.bootstrap import prepare

        applied = anyio.run(prepare, settings)
        print(f"streams ready ({settings.stream_replicas} replicas); migrated: "
              f"{', '.join(applied) or 'nothing new'}")
        return 0
    if args.command == "health":
        import anyio

        from openweights.deploy.health import check

        problems = anyio.run(check, settings)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    from openweights.deploy.bucket import run

    print(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
