"""The shipped profiles' published LLM tokens/s against the generative projection.

    python bench/llm_reference_check.py [--json FILE]

Projects every `llm_references` entry of the shipped device profiles with the arithmetic
`project_generation` ships (effbench.devices.llm_references), uncalibrated and as shipped, and writes the
report to bench/llm_reference_check.json (tests/devices/test_llm_references.py recomputes it and fails
when the stored figures differ). Pure arithmetic: no model is exported or run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
JSON = ROOT / "bench" / "llm_reference_check.json"


def report():
    from effbench.devices import load_profiles, shipped_ids
    from effbench.devices.llm_references import check_llm_references
    return check_llm_references(load_profiles([i for i in shipped_ids() if i != "local"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(JSON))
    a = ap.parse_args(argv)
    r = report()
    Path(a.json).write_text(json.dumps(r.to_json(), indent=1) + "\n")
    print(r.text())
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
