#!/usr/bin/env python3
"""Print a one-line-style sources.list for the private apt view, derived from this machine's own
apt sources (never a hard-coded mirror): the Debian suites of this release, main component, with
the foreign architectures we need. The security suite only carries amd64/arm64 (shared/PLATFORM.md),
so it is restricted to those."""
import glob
import re
import sys

arches = sys.argv[1:]
codename = None
with open("/etc/os-release") as f:
    for line in f:
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip().strip('"')
if not codename:
    sys.exit("apt-sources: no VERSION_CODENAME in /etc/os-release")


def entries():
    """Yield (uris, suites, components, signed_by) from .sources (deb822) and .list files."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for block in re.split(r"\n\s*\n", open(path).read()):
            fields = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
            if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"])[0] == "no":
                continue
            yield (fields.get("uris", []), fields.get("suites", []),
                   fields.get("components", []), " ".join(fields.get("signed-by", [])))
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = open(path).read().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line.startswith("deb "):
                continue
            opts = ""
            m = re.match(r"deb\s+\[([^\]]*)\]\s+(.*)", line)
            rest = m.group(2) if m else line[4:]
            if m:
                opts = m.group(1)
            parts = rest.split()
            signed = re.search(r"signed-by=(\S+)", opts)
            yield ([parts[0]], [parts[1]], parts[2:], signed.group(1) if signed else "")


seen = set()
for uris, suites, comps, signed_by in entries():
    if "main" not in comps:
        continue
    for suite in suites:
        if suite != codename and not suite.startswith(codename + "-"):
            continue
        use = ["amd64", "arm64"] if suite.endswith("-security") else arches
        use = [a for a in use if a in arches]
        for uri in uris:
            key = (uri, suite)
            if key in seen:
                continue
            seen.add(key)
            opts = "arch=" + ",".join(use)
            if signed_by:
                opts += " signed-by=" + signed_by
            print(f"deb [{opts}] {uri} {suite} main")
if not seen:
    sys.exit(f"apt-sources: no Debian '{codename}' main source found in /etc/apt")
