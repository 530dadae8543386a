#!/usr/bin/env python3
"""LiveKit's browser SDK (`livekit-client`), vendored under static/vendor/livekit-client/ so the
test call page (/admin/test-call/) never loads it from a CDN.

    python3 bin/vendor_livekit_client.py           fetch the pinned package with `npm pack`,
                                                   check it against the recorded integrity,
                                                   copy the files out, check their sha256
    python3 bin/vendor_livekit_client.py --check   only check the files on disk (no network)

What is pinned and which files are taken from the package are in VENDORED.json next to them:
the version, the registry tarball's `integrity` (npm's sha512, as package-lock.json records
it) and each file's sha256. To move to another version, change `version`, `tarball` and
`integrity` there (from `npm view livekit-client@<version> dist`) and the `sha256` of each file,
and keep tests/js/package.json on the same version (a test checks both pins agree).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "static" / "vendor" / "livekit-client"
RECORD = HERE / "VENDORED.json"
NPM_TIMEOUT_S = 120  # the whole `npm pack` exchange


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check(record: dict) -> list[str]:
    """What differs between the files on disk and the record (empty: all match)."""
    problems = []
    for name, wanted in record["files"].items():
        path = HERE / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif _sha256(path.read_bytes()) != wanted["sha256"]:
            problems.append(f"{name}: sha256 {_sha256(path.read_bytes())}, recorded {wanted['sha256']}")
    return problems


def fetch(record: dict) -> None:
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is not installed (Node.js's npm fetches the package from its registry)")
    spec = f"{record['package']}@{record['version']}"
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [npm, "pack", spec, "--pack-destination", tmp, "--json"],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
        if done.returncode != 0:
            sys.exit(f"npm pack {spec} failed:\n{done.stderr}")
        [tarball] = Path(tmp).glob("*.tgz")
        data = tarball.read_bytes()
        algorithm, _, digest = record["integrity"].partition("-")
        got = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
        if got != digest:
            sys.exit(f"{tarball.name}: integrity {algorithm}-{got}, recorded {record['integrity']}")
        with tarfile.open(tarball) as archive:
            for name, wanted in record["files"].items():
                member = archive.extractfile(wanted["from"])
                if member is None:
                    sys.exit(f"{wanted['from']} is not a file in {tarball.name}")
                content = member.read()
                if _sha256(content) != wanted["sha256"]:
                    sys.exit(f"{wanted['from']}: sha256 {_sha256(content)}, recorded {wanted['sha256']}")
                (HERE / name).write_bytes(content)
                print(f"{name}: {wanted['sha256']} (from {spec})")


def main() -> None:
    record = json.loads(RECORD.read_text())
    if "--check" not in sys.argv[1:]:
        fetch(record)
    problems = check(record)
    if problems:
        sys.exit("vendored livekit-client does not match VENDORED.json:\n" + "\n".join(problems))
    print(f"{record['package']} {record['version']}: every vendored file matches VENDORED.json")


if __name__ == "__main__":
    main()
