"""Run every benchmark module and write benchmarks/results.json and the table in BENCHMARKS.md.

    python -m benchmarks.run [--quick] [--only render,identity,synthfaces]
    python -m benchmarks.run --merge OTHER/results.json   # take the CUDA entries a GPU machine measured

A run keeps the earlier entries of the modules it does not run, and, without a CUDA GPU, every earlier CUDA entry.
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

MODULES = ("render", "identity", "synthfaces", "train", "train_cuda", "eval", "reconstruct")
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


def on_cuda(result: dict) -> bool:
    return result["config"].get("device") == "cuda" or result["name"].endswith("_cuda")


def kept_results(path: Path, rerun: set[str], cuda: bool) -> list[dict]:
    """Entries of an earlier results.json that this run does not measure again: those of the modules it did not
    run, and, on a machine without a CUDA GPU, every CUDA entry (measured where one was lent)."""
    if not path.is_file():
        return []
    return [r for r in json.loads(path.read_text()).get("results", [])
            if module_of(r) not in rerun or (on_cuda(r) and not cuda)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--only", default=",".join(MODULES), help="comma-separated subset of " + ",".join(MODULES))
    parser.add_argument("--merge", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: replace this file's CUDA entries by those of RESULTS_JSON (a results.json "
                             "written on a GPU machine), each stamped with that machine's torch version and GPU")
    args = parser.parse_args()
    if args.merge:
        return merge_cuda_entries(args.merge)
    results = []
    for name in args.only.split(","):
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"[bench] {name} ...", flush=True)
        found = [dict(r, module=name) for r in module.run(quick=args.quick)]
        for r in found:
            print(f"  {r['name']:<40} {r['value']:>10} {r['unit']}")
        results += found
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               **({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {})}
    results = kept_results(ROOT / "results.json", set(args.only.split(",")), torch.cuda.is_available()) + results
    write_results(machine, results)


def merge_cuda_entries(path: Path) -> None:
    """Replace the CUDA entries of benchmarks/results.json by the CUDA entries of `path` (their machine's torch
    version and GPU go into each entry's config); the CPU entries and the machine line stay."""
    if not path.is_file():
        raise SystemExit(f"[bench] {path}: no such file (give the results.json a GPU machine's `make bench` wrote)")
    other = json.loads(path.read_text())
    stamp = {k: v for k, v in other.get("machine", {}).items() if k in ("torch", "gpu")}
    found = [dict(r, config={**stamp, **r["config"]}) for r in other.get("results", []) if on_cuda(r)]
    if not found:
        raise SystemExit(f"[bench] {path}: holds no CUDA entries")
    mine = json.loads((ROOT / "results.json").read_text()) if (ROOT / "results.json").is_file() else {}
    results = [r for r in mine.get("results", []) if not on_cuda(r)] + found
    write_results(mine.get("machine", {}), results)
    print(f"[bench] merged {len(found)} CUDA entries from {path}")


def write_results(machine: dict, results: list[dict]) -> None:
    """benchmarks/results.json and the table between BENCHMARKS.md's markers, both written atomically."""
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
