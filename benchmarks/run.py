"""Run every benchmark module and write benchmarks/results.json and the table in BENCHMARKS.md.

    python -m benchmarks.run [--quick] [--only render,identity,synthfaces]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
from pathlib import Path

import torch

from fileio import write_text_atomically

MODULES = ("render", "identity", "synthfaces", "train", "eval", "reconstruct")
ROOT = Path(__file__).resolve().parent
TABLE_START, TABLE_END = "<!-- results:start -->", "<!-- results:end -->"


def markdown_table(results: list[dict]) -> str:
    lines = ["| name | value | unit | device | config |", "|---|---:|---|---|---|"]
    for r in results:
        cfg = {k: v for k, v in r["config"].items() if k != "device"}
        lines.append(f"| {r['name']} | {r['value']} | {r['unit']} | {r['config'].get('device', '')} | "
                     + ", ".join(f"{k}={v}" for k, v in cfg.items()) + " |")
    return "\n".join(lines)


def module_of(result: dict) -> str:
    """The benchmark module an entry came from (entries written before modules were recorded: by name)."""
    if "module" in result:
        return result["module"]
    name, config = result["name"], result["config"]
    if name.startswith("raster") or (name == "resnet50_fwd_ms_per_image" and "vertices" in config):
        return "render"
    if name.startswith("idnet") or name == "resnet50_fwd_ms_per_image":
        return "identity"
    return "synthfaces" if name.startswith("synthfaces") else "train"


def kept_results(path: Path, rerun: set[str]) -> list[dict]:
    """Entries of an earlier results.json from the modules this (--only) run did not measure again."""
    if not path.is_file():
        return []
    return [r for r in json.loads(path.read_text()).get("results", []) if module_of(r) not in rerun]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--only", default=",".join(MODULES), help="comma-separated subset of " + ",".join(MODULES))
    args = parser.parse_args()
    results = []
    for name in args.only.split(","):
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"[bench] {name} ...", flush=True)
        found = [dict(r, module=name) for r in module.run(quick=args.quick)]
        for r in found:
            print(f"  {r['name']:<40} {r['value']:>10} {r['unit']}")
        results += found
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    if set(args.only.split(",")) != set(MODULES):
        results = kept_results(ROOT / "results.json", set(args.only.split(","))) + results
    write_text_atomically(ROOT / "results.json", json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    doc = ROOT.parent / "BENCHMARKS.md"
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{TABLE_START}\n{TABLE_END}\n"
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    table = f"{TABLE_START}\nMachine: {machine}\n\n{markdown_table(results)}\n{TABLE_END}"
    write_text_atomically(doc, head + table + tail)
    print(f"[bench] wrote {ROOT / 'results.json'} and {doc}")


if __name__ == "__main__":
    main()
