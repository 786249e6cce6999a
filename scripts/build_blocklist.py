#!/usr/bin/env python3
"""Regenerate api/data/common-passwords.txt from a downloaded Django wheel.

Usage:
    pip download --no-deps -d /tmp/pwsrc django
    python scripts/build_blocklist.py /tmp/pwsrc/django-X.Y.Z-py3-none-any.whl [-o OUTPUT]

The list is read from django/contrib/auth/common-passwords.txt.gz inside the
wheel (the list behind Django's CommonPasswordValidator). Each entry is
stripped and lowercased; blank lines are dropped; duplicates are removed
keeping the first occurrence, so the source (frequency) order is preserved.

Output format (UTF-8, "\\n" line endings): a header of comment lines that each
start with "# " (hash + space), then one password per line. Note that a few
real passwords start with "#" (e.g. "#1pimp") but none starts with "# ", so a
reader must treat only lines starting with "# " as comments.

Standard library only. The output depends only on the wheel and the command
line, so rerunning with the same wheel reproduces the file byte for byte.
"""

import argparse
import email.parser
import gzip
import hashlib
import shlex
import sys
import zipfile
from pathlib import Path

MEMBER = "django/contrib/auth/common-passwords.txt.gz"
COMMENT_PREFIX = "# "
MIN_ENTRIES = 10_000
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "api" / "data" / "common-passwords.txt"


def read_metadata(zf: zipfile.ZipFile) -> tuple[str, str, str]:
    names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
    if len(names) != 1:
        sys.exit(f"error: expected one .dist-info/METADATA in wheel, found {names}")
    msg = email.parser.Parser().parsestr(zf.read(names[0]).decode("utf-8"), headersonly=True)
    licence = msg.get("License-Expression") or msg.get("License") or "unknown"
    return str(msg["Name"]), str(msg["Version"]), str(licence)


def load_passwords(zf: zipfile.ZipFile) -> list[str]:
    text = gzip.decompress(zf.read(MEMBER)).decode("utf-8")
    seen: set[str] = set()
    out: list[str] = []
    for line in text.split("\n"):
        pw = line.strip().lower()
        if not pw or pw in seen:
            continue
        # Guard against entries that would break a line-oriented reader.
        if pw.startswith(COMMENT_PREFIX):
            sys.exit(f"error: entry {pw!r} would be read as a comment")
        if len(pw.splitlines()) != 1:
            sys.exit(f"error: entry {pw!r} contains a line separator")
        seen.add(pw)
        out.append(pw)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("wheel", type=Path, help="path to the downloaded Django wheel (.whl)")
    ap.add_argument(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="output file (default: api/data/common-passwords.txt)",
    )
    args = ap.parse_args(argv)

    wheel_sha256 = hashlib.sha256(args.wheel.read_bytes()).hexdigest()
    with zipfile.ZipFile(args.wheel) as zf:
        name, version, licence = read_metadata(zf)
        passwords = load_passwords(zf)

    if len(passwords) < MIN_ENTRIES:
        sys.exit(f"error: only {len(passwords)} entries, expected >= {MIN_ENTRIES}")

    argv_used = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "scripts/build_blocklist.py", *argv_used])
    header = [
        f"Common-password blocklist: {len(passwords)} entries, one per line,"
        " in source order (most common first).",
        f"Source: PyPI package {name} {version}, file {MEMBER}",
        f"Source wheel: {args.wheel.name} (sha256 {wheel_sha256})",
        f"Licence: {licence} (Django's licence; list created by Royce Williams,"
        " per Django's CommonPasswordValidator docstring)",
        f"Obtained with: pip download --no-deps -d /tmp/pwsrc {name.lower()}=={version}",
        f"Generated with: {command}",
        "Processing: gunzip, UTF-8, strip + lowercase each line, drop blanks,"
        " deduplicate keeping first occurrence.",
        "Comment lines start with '# ' (hash + space); some passwords start with '#'"
        " (e.g. '#1pimp') and are data.",
    ]

    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="\n") as f:
        for h in header:
            f.write(COMMENT_PREFIX + h + "\n")
        for pw in passwords:
            f.write(pw + "\n")
    print(f"wrote {len(passwords)} passwords to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
