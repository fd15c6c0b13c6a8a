"""Start-up cost of the CLI: `interp plugins`, `interp --help` and a list command.

Target (issue 2): `interp plugins` runs in under a second and never imports torch.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

COMMANDS = [["plugins"], ["--help"], ["backbones", "list"], ["methods", "list"]]
PROBE = (
    "import sys\nfrom interpcore import cli\n"
    "try:\n    cli.main({args!r})\nexcept SystemExit:\n    pass\n"
    "sys.stderr.write('TORCH' if 'torch' in sys.modules else 'NOTORCH')\n"
)


def measure(args, repeats: int = 5):
    times, torch_seen = [], False
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", PROBE.format(args=args)],
                           capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        torch_seen |= not r.stderr.rstrip().endswith("NOTORCH")
    return statistics.median(times), max(times), torch_seen


def main() -> str:
    lines = [
        "## CLI start-up",
        "",
        "Wall time of a fresh `python -c 'interpcore.cli.main([...])'` process (median and worst of 5),",
        "and whether torch was imported. Target: `interp plugins` under 1 s, no torch.",
        "",
        "| command | median (s) | worst (s) | imports torch |",
        "|---|---|---|---|",
    ]
    for args in COMMANDS:
        med, worst, torch_seen = measure(args)
        lines.append(f"| `interp {' '.join(args)}` | {med:.3f} | {worst:.3f} | {'yes' if torch_seen else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main())
