"""The fault-injection table of docs/service.md, in a checkout of the repository.

    python -m damage_rig.tools.fault_table [--model DIR] [--items N] [--only CASE ...] [--json OUT]

The cases, their stand-ins (a pty relay, a slow inference backend, a systemd
notify listener) and the table live with the tests, in tests/helpers/faults.py,
where the `faults` tests run each case with fewer items; this script runs them
all from the repository root and passes its arguments and exit code through.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "helpers" / "faults.py"


def main(argv: list[str] | None = None) -> int:
    if not CASES.is_file():
        print(f"fault_table: {CASES} is missing: the fault cases live in the repository's tests/, "
              "run this from a checkout", file=sys.stderr)
        return 2
    args = sys.argv[1:] if argv is None else argv
    return subprocess.call([sys.executable, "-m", "tests.helpers.faults", *args], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
