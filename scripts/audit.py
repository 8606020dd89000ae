"""Check the installed (pinned) dependencies for known vulnerabilities with pip-audit.

    python scripts/audit.py [--strict]

Audits every package installed in this virtualenv (requirements.txt and
requirements-dev.txt with everything they pull in) against PyPI's vulnerability
data. Exit 1 when any has a known vulnerability. When the vulnerability service
cannot be reached (no network, or a mirror without PyPI's per-release JSON
API) nothing could be audited: that is said loudly and the exit code is 0, or 2
with ``--strict`` / ``AUDIT_STRICT=1`` (use that in a CI with network access).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SERVICE = os.environ.get("AUDIT_SERVICE", "pypi")  # osv also works where osv.dev is reachable


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--strict", action="store_true", default=os.environ.get("AUDIT_STRICT") == "1",
                   help="fail (exit 2) when the audit could not be done")
    args = p.parse_args(argv)
    cmd = [sys.executable, "-m", "pip_audit", "--vulnerability-service", SERVICE, "--format", "json",
           "--progress-spinner", "off", "--skip-editable"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"audit: pip-audit failed (exit {proc.returncode}):\n{proc.stderr.strip()}", file=sys.stderr)
        return 2 if args.strict else 0
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)
    for d in vulnerable:
        for v in d["vulns"]:
            fixed = ", ".join(v.get("fix_versions") or []) or "no fixed release yet"
            print(f"audit: {d['name']}=={d['version']}: {v['id']} (fixed in: {fixed})")
    if vulnerable:
        print(f"audit: FAILED: {len(vulnerable)} of {len(deps)} packages have known vulnerabilities")
        return 1
    if audited == 0 and deps:
        print(f"audit: NOT DONE: the vulnerability service ({SERVICE}) answered for none of the {len(deps)} "
              f"packages (offline, or an index mirror without PyPI's JSON API); first reason: "
              f"{skipped[0]['skip_reason']}", file=sys.stderr)
        return 2 if args.strict else 0
    print(f"audit: ok: {audited} packages audited, no known vulnerabilities"
          + (f" ({len(skipped)} not on the index: {', '.join(d['name'] for d in skipped[:10])})" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
