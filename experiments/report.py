"""Reports from saved metrics: report.md and a self-contained report.html (images beside them).

    python -m experiments.report reports/synthfaces          # re-make one evaluation's report
    python -m experiments.report reports/ablations --ablations

Kept apart from the computation so a report can be re-made (or restyled) without evaluating again.
An evaluation folder holds metrics.json, samples.json and grid.png (experiments.evaluate); this module
adds metric_vs_yaw.png, metric_vs_occlusion.png, report.md and report.html. An ablation folder
(experiments.sweep) holds metrics.json with one entry per variant; this adds ablations.png and the
reports with Table 2 in the paper's column order.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import sys
from pathlib import Path

import numpy as np

from fileio import write_text_atomically

# Table 1: the paper's columns, face region first (headline), per protocol.
TABLE1_FIELDS = (("psnr_face_db", "PSNR (dB)"), ("ssim_face", "SSIM"))
METHOD_LABELS = {"mean_face": "mean face", "coarse": "coarse", "fine": "fine (full)"}
METRIC_LABELS = {
    "psnr_face_db": "PSNR face (dB)", "psnr_crop_db": "PSNR crop (dB)", "ssim_face": "SSIM face",
    "ssim_crop": "SSIM crop", "albedo_error": "albedo MAE (visible skin)", "landmark_error_px": "68-pt landmark error (px @224)",
    "pose_error_deg": "pose error (deg, mean)", "yaw_error_deg": "yaw error (deg)", "pitch_error_deg": "pitch error (deg)",
    "roll_error_deg": "roll error (deg)", "nme": "NME (bbox)",
}
# Table 2: the paper's column order.
ABLATION_ORDER = ("photo_id", "att", "full", "no_sa", "no_fa")
ABLATION_FIELDS = (("psnr_face_db", "PSNR face (dB)"), ("ssim_face", "SSIM face"), ("id_cosine_dlib", "ID cosine (dlib)"),
                   ("albedo_error", "albedo MAE"))
YAW_PLOT_BIN_DEG = 10.0
OCCLUSION_PLOT_BINS = 8


def metric_label(key: str) -> str:
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    if key.startswith("id_cosine_"):
        return f"ID cosine ({key[len('id_cosine_'):]})"
    if key.startswith("nme_yaw_"):
        low, high = key[len("nme_yaw_"):].split("_")
        return f"NME |yaw| {low}-{high}"
    if key == "nme_balanced":
        return "NME (mean of yaw bins)"
    if key.startswith("id_consistency_"):
        kind, net = key[len("id_consistency_"):].split("_", 1)
        return f"ID consistency, {kind} identity ({net})"
    return key


def mean_std(field: dict | None, digits: int = 3) -> str:
    """'mean ± std' of a {mean, std, count} field, '–' when empty."""
    if not field or field.get("mean") is None:
        return "–"
    return f"{field['mean']:.{digits}f} ± {field['std']:.{digits}f}"


def _digits(key: str) -> int:
    return 2 if ("db" in key or "deg" in key or "px" in key) else 3


# ----------------------------------------------------------------------------------------- a tiny document

class Document:
    """Blocks rendered to both Markdown and HTML, so the two reports always say the same."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, path: str, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out += ["#" * block[1] + " " + block[2], ""]
            elif kind == "p":
                out += [block[1], ""]
            elif kind == "table":
                header, rows = block[1], block[2]
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
                out += ["| " + " | ".join(row) + " |" for row in rows]
                out.append("")
            elif kind == "img":
                out += [f"![{block[2]}]({block[1]})", ""]
            elif kind == "pre":
                out += ["```", block[1], "```", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
            elif kind == "p":
                body.append(f"<p>{e(block[1])}</p>")
            elif kind == "table":
                head = "".join(f"<th>{e(h)}</th>" for h in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                body.append(f'<figure><img src="{e(block[1])}" alt="{e(block[2])}"><figcaption>{e(block[2])}'
                            "</figcaption></figure>")
            elif kind == "pre":
                body.append(f"<pre>{e(block[1])}</pre>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;"
                 "text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
                 "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto;max-height:30em}")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(self.title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        md, page = out_dir / "report.md", out_dir / "report.html"
        write_text_atomically(md, self.markdown())
        write_text_atomically(page, self.html())
        return md, page


# ----------------------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _binned(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centres, means = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (x >= low) & (x < high) & np.isfinite(y)
        if inside.any():
            centres.append((low + high) / 2)
            means.append(y[inside].mean())
    return np.asarray(centres), np.asarray(means)


def _plot_keys(metrics: dict) -> list[str]:
    first = next(iter(next(iter(metrics["protocols"].values())).values()))
    keys = ["psnr_face_db", "ssim_face"] + [k for k in first if k.startswith("id_cosine_")][:1]
    keys += [k for k in ("albedo_error", "nme") if k in first]
    return [k for k in keys if k in first]


def plot_metric_vs(metrics: dict, samples: dict, x: np.ndarray, protocol: str, edges: np.ndarray, xlabel: str,
                   title: str, path: Path) -> Path | None:
    """One panel per headline metric: per-sample points (faint) and binned means (lines), one colour per method."""
    if protocol not in samples.get("values", {}) or not len(x):
        return None
    plt = _pyplot()
    keys = _plot_keys(metrics)
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.3 * rows), squeeze=False)
    for axis in axes.flat[len(keys):]:
        axis.set_visible(False)
    for axis, key in zip(axes.flat, keys):
        for k, method in enumerate(metrics["methods"]):
            y = np.asarray([math.nan if v is None else v for v in samples["values"][protocol][method].get(key, [])],
                           dtype=np.float64)
            if len(y) != len(x):
                continue
            colour = f"C{k}"
            axis.scatter(x, y, s=6, alpha=0.25, color=colour)
            centres, means = _binned(x, y, edges)
            axis.plot(centres, means, "-o", ms=3, color=colour, label=METHOD_LABELS.get(method, method))
        axis.set_xlabel(xlabel)
        axis.set_title(metric_label(key), fontsize=10)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def evaluation_plots(metrics: dict, samples: dict, out_dir: Path) -> dict[str, str]:
    """metric_vs_yaw.png (clean protocol) and metric_vs_occlusion.png (occluded protocol); {name: file}."""
    made = {}
    yaw = np.abs(np.asarray([math.nan if v is None else v for v in samples.get("yaw_deg", [])], dtype=np.float64))
    if len(yaw) and np.isfinite(yaw).any():
        top = max(90.0, float(np.nanmax(yaw)))
        edges = np.arange(0.0, top + YAW_PLOT_BIN_DEG, YAW_PLOT_BIN_DEG)
        source = metrics.get("yaw_source", "true")
        path = plot_metric_vs(metrics, samples, yaw, "clean", edges, f"|yaw| (deg, {source})",
                              "metric vs. yaw (clean inputs)", out_dir / "metric_vs_yaw.png")
        if path:
            made["metric_vs_yaw"] = path.name
    fraction = np.asarray(samples.get("occluded_fraction", {}).get("occluded", []), dtype=np.float64)
    if len(fraction):
        edges = np.linspace(0.0, 1.0 + 1e-9, OCCLUSION_PLOT_BINS + 1)
        path = plot_metric_vs(metrics, samples, fraction, "occluded", edges, "occluded fraction of the face",
                              "metric vs. occlusion (occluded protocol, scored against the clean image)",
                              out_dir / "metric_vs_occlusion.png")
        if path:
            made["metric_vs_occlusion"] = path.name
    return made


# ----------------------------------------------------------------------------------------- evaluation report

def table1(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """The paper's Table 1 layout: rows mean face / coarse / fine; per protocol PSNR, SSIM, ID cosine per net."""
    nets = metrics.get("identity_nets", [])
    fields = list(TABLE1_FIELDS) + [(f"id_cosine_{n}", f"ID {n}") for n in nets]
    protocols = list(metrics["protocols"])
    header = ["method"] + [f"{p}: {label}" for p in protocols for _, label in fields]
    rows = []
    for method in ("mean_face", "coarse", "fine"):
        if method in metrics.get("methods_absent", {}):
            rows.append([METHOD_LABELS[method]] + [metrics["methods_absent"][method]] + [""] * (len(header) - 2))
            continue
        if method not in metrics["methods"]:
            continue
        rows.append([METHOD_LABELS[method]] + [mean_std(metrics["protocols"][p][method].get(key), _digits(key))
                                               for p in protocols for key, _ in fields])
    return header, rows


def all_metrics_table(metrics: dict, protocol: str) -> tuple[list[str], list[list[str]]]:
    table = metrics["protocols"][protocol]
    methods = metrics["methods"]
    keys: list[str] = []
    for method in methods:
        keys += [k for k in table[method] if k not in keys]
    header = ["metric"] + [f"{METHOD_LABELS.get(m, m)} (mean ± std)" for m in methods] + ["n"]
    rows = []
    for key in keys:
        count = max((table[m].get(key) or {}).get("count", 0) for m in methods)
        rows.append([metric_label(key)] + [mean_std(table[m].get(key), _digits(key)) for m in methods] + [str(count)])
    return header, rows


def write_report(out_dir: str | Path) -> tuple[Path, Path]:
    """Make report.md, report.html and the plots of one evaluation folder (metrics.json, samples.json, grid.png)."""
    out_dir = Path(out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    samples_path = out_dir / metrics.get("samples_file", "samples.json")
    samples = json.loads(samples_path.read_text()) if samples_path.is_file() else {}
    plots = evaluation_plots(metrics, samples, out_dir) if samples else {}
    doc = Document(f"FAID-Recon evaluation: {metrics.get('dataset', '?')}")
    doc.paragraph(f"checkpoint: {metrics.get('checkpoint', '?')} · commit: {metrics.get('commit') or 'unknown'} · "
                  f"{metrics.get('samples_evaluated', 0)} samples at {metrics.get('image_size')} px · "
                  f"{metrics.get('seconds', '?')} s")
    doc.heading("Table 1: fidelity and identity (face region, mean ± std)")
    doc.table(*table1(metrics))
    for method, why in metrics.get("methods_absent", {}).items():
        doc.paragraph(f"{METHOD_LABELS.get(method, method)}: {why}.")
    for net, why in metrics.get("identity_nets_absent", {}).items():
        doc.paragraph(f"ID net {net} left out: {why}")
    for protocol in metrics["protocols"]:
        doc.heading(f"All metrics, {protocol} protocol", 3)
        doc.paragraph(metrics.get("protocol_notes", {}).get(protocol, ""))
        doc.table(*all_metrics_table(metrics, protocol))
    nme_keys = [k for k in ("nme_yaw_0_30", "nme_yaw_30_60", "nme_yaw_60_90", "nme", "nme_balanced")]
    if any("nme" in table.get(m, {}) for table in metrics["protocols"].values() for m in metrics["methods"]):
        doc.heading("68-point NME by |yaw| (bounding-box normalised, 3DDFA protocol)", 3)
        header = ["protocol", "method"] + [metric_label(k) for k in nme_keys]
        rows = [[p, METHOD_LABELS.get(m, m)] + [mean_std(metrics["protocols"][p][m].get(k), 4) for k in nme_keys]
                for p in metrics["protocols"] for m in metrics["methods"]]
        doc.table(header, rows)
    consistency = metrics.get("input_id_consistency", {})
    if consistency:
        doc.heading("ID consistency across one identity's views", 3)
        doc.paragraph("Mean pairwise cosine between the identity embeddings of one identity's views (renders over "
                      "mid-grey) vs. the views of other identities; 'input' is the identity net on the inputs "
                      "themselves. A larger same-minus-different gap means the reconstruction keeps identity.")
        header = ["protocol", "row"]
        nets = metrics.get("identity_nets", [])
        for net in nets:
            header += [f"same ({net})", f"different ({net})", f"gap ({net})"]
        rows = []
        for protocol, reference in consistency.items():
            for row in ("input", *metrics["methods"]):
                fields = reference if row == "input" else metrics["protocols"][protocol][row]
                cells = [protocol, row.replace("_", " ")]
                for net in nets:
                    same, other = fields.get(f"id_consistency_same_{net}"), fields.get(f"id_consistency_different_{net}")
                    gap = "–" if not same or same["mean"] is None or not other or other["mean"] is None \
                        else f"{same['mean'] - other['mean']:.3f}"
                    cells += [mean_std(same), mean_std(other), gap]
                rows.append(cells)
        doc.table(header, rows)
    doc.heading("Images")
    images = metrics.get("images", {})
    if "grid" in images:
        doc.image(images["grid"], "input | mean face | coarse | fine | occluded input | reconstruction from it | "
                                  "novel views at yaw -45 and +45 (rows: first samples)")
    for name, caption in (("metric_vs_yaw", "metric vs. |yaw|, clean protocol"),
                          ("metric_vs_occlusion", "metric vs. occluded fraction, occluded protocol")):
        if name in plots:
            doc.image(plots[name], caption)
    failures = metrics.get("failures", {})
    doc.heading("Photos left out")
    doc.paragraph(f"{failures.get('count', 0)} left out: {failures.get('unreadable', 0)} unreadable, "
                  f"{failures.get('no_face', 0)} without a face.")
    if failures.get("items"):
        doc.table(["photo", "status", "reason"], [[f["path"], f["status"], f["reason"]] for f in failures["items"][:100]])
        if len(failures["items"]) > 100:
            doc.paragraph(f"... and {len(failures['items']) - 100} more in metrics.json.")
    doc.heading("How it was measured")
    settings = metrics.get("settings", {})
    doc.table(["setting", "value"], [[k, str(v)] for k, v in settings.items()]
              + [["face region", str(metrics.get("face_region"))]]
              + ([["face region note", metrics["face_region_note"]]] if metrics.get("face_region_note") else [])
              + [["yaw", str(metrics.get("yaw_source"))]])
    for protocol, note in metrics.get("protocol_notes", {}).items():
        doc.paragraph(f"{protocol}: {note}.")
    if metrics.get("config") is not None:
        doc.heading("Checkpoint config", 3)
        doc.code(json.dumps(metrics["config"], indent=1, default=str))
    return doc.write(out_dir)


# ----------------------------------------------------------------------------------------- ablation report

def _ablation_method(entry: dict) -> str:
    return "fine" if "fine" in entry["metrics"].get("methods", []) else "coarse"


def ordered_variants(ablation: dict) -> list[str]:
    """The sweep's variant names in the paper's column order (ABLATION_ORDER), then any others as listed."""
    variants = [name for name in ABLATION_ORDER if name in ablation["variants"]]
    return variants + [name for name in ablation["variants"] if name not in variants]


def table2(ablation: dict) -> tuple[list[str], list[list[str]]]:
    """Table 2: rows metric x protocol, columns the variants in the paper's order (fine method, else coarse)."""
    variants = ordered_variants(ablation)
    header = ["metric"] + [ablation["variants"][name]["label"] for name in variants]
    rows = []
    first = ablation["variants"][variants[0]]["metrics"] if variants else {}
    for protocol in first.get("protocols", {}):
        for key, label in ABLATION_FIELDS:
            cells = []
            for name in variants:
                entry = ablation["variants"][name]
                cells.append(mean_std(entry["metrics"]["protocols"].get(protocol, {}).get(_ablation_method(entry), {}).get(key),
                                      _digits(key)))
            if any(c != "–" for c in cells):
                rows.append([f"{protocol}: {label}"] + cells)
    return header, rows


def _sample_values(folder: Path) -> dict | None:
    path = folder / "samples.json"
    return json.loads(path.read_text()) if path.is_file() else None


def paired_differences(ablation: dict, out_dir: Path, reference: str = "full") -> tuple[list[str], list[list[str]]] | None:
    """reference minus each other variant, paired over the same evaluation samples: 'mean ± standard error'.

    Reads each variant's per-sample values (<out_dir>/<variant>/samples.json). A cell is '–' when either side
    lacks the metric or the two evaluations did not score the same samples. None when the reference variant or
    its samples are missing.
    """
    variants = ablation["variants"]
    if reference not in variants:
        return None
    base = _sample_values(out_dir / reference)
    if base is None:
        return None
    others = [n for n in ordered_variants(ablation) if n != reference]
    header = ["metric"] + [f"{variants[reference]['label']} − {variants[n]['label']}" for n in others]
    samples = {n: _sample_values(out_dir / n) for n in others}
    rows = []
    for protocol in base.get("values", {}):
        for key, label in ABLATION_FIELDS:
            cells = []
            for name in others:
                other = samples[name]
                if other is None or other.get("index") != base.get("index"):
                    cells.append("–")
                    continue
                mine = base["values"][protocol].get(_ablation_method(variants[reference]), {}).get(key)
                theirs = other["values"].get(protocol, {}).get(_ablation_method(variants[name]), {}).get(key)
                if not mine or not theirs:
                    cells.append("–")
                    continue
                diff = np.asarray([math.nan if a is None else a for a in mine], dtype=np.float64) - \
                    np.asarray([math.nan if b is None else b for b in theirs], dtype=np.float64)
                diff = diff[np.isfinite(diff)]
                if len(diff) < 2:
                    cells.append("–")
                    continue
                digits = _digits(key)
                cells.append(f"{diff.mean():+.{digits}f} ± {diff.std(ddof=1) / math.sqrt(len(diff)):.{digits}f}")
            if any(c != "–" for c in cells):
                rows.append([f"{protocol}: {label}"] + cells)
    return header, rows


def ablation_chart(ablation: dict, path: Path) -> Path | None:
    """Grouped bars: one panel per metric, bars per variant, clean and occluded side by side."""
    variants = ordered_variants(ablation)
    if not variants:
        return None
    plt = _pyplot()
    protocols = list(ablation["variants"][variants[0]]["metrics"].get("protocols", {}))
    fields = [(k, l) for k, l in ABLATION_FIELDS
              if any(ablation["variants"][v]["metrics"]["protocols"].get(p, {}).get(_ablation_method(ablation["variants"][v]),
                                                                                    {}).get(k) for v in variants for p in protocols)]
    figure, axes = plt.subplots(1, len(fields), figsize=(4.2 * len(fields), 3.6), squeeze=False)
    width = 0.8 / max(len(protocols), 1)
    positions = np.arange(len(variants))
    for axis, (key, label) in zip(axes[0], fields):
        shown = []
        for k, protocol in enumerate(protocols):
            means, stds = [], []
            for name in variants:
                entry = ablation["variants"][name]
                field = entry["metrics"]["protocols"].get(protocol, {}).get(_ablation_method(entry), {}).get(key) or {}
                means.append(math.nan if field.get("mean") is None else field["mean"])
                stds.append(0.0 if field.get("std") is None else field["std"])
            axis.bar(positions + (k - (len(protocols) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                     label=protocol, color=f"C{k}", alpha=0.85)
            shown += [(m, s) for m, s in zip(means, stds) if math.isfinite(m)]
        if shown and key.startswith(("psnr", "ssim", "id_cosine")):
            # Differences are small next to the values: zoom in on the bars' tops (the axis does not start at 0).
            low = min(m - s for m, s in shown)
            high = max(m + s for m, s in shown)
            span = max(high - low, 1e-3)
            axis.set_ylim(low - 0.5 * span, high + 0.3 * span)
        axis.set_xticks(positions, [ablation["variants"][n]["label"] for n in variants], rotation=30, ha="right",
                        fontsize=8)
        axis.set_title(label, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle("Ablations (Table 2), same budget and seed", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_ablation_report(out_dir: str | Path) -> tuple[Path, Path]:
    """report.md, report.html and ablations.png of a sweep folder from its metrics.json."""
    out_dir = Path(out_dir)
    ablation = json.loads((out_dir / "metrics.json").read_text())
    chart = ablation_chart(ablation, out_dir / "ablations.png")
    doc = Document("FAID-Recon ablations (Table 2)")
    doc.paragraph(f"quick: {ablation.get('quick')} · commit: {ablation.get('commit') or 'unknown'} · evaluated on "
                  f"{ablation.get('evaluation', '?')}")
    doc.paragraph("Every variant shares one stage-1 checkpoint (warm start + coarse), trained once and copied, so only "
                  "stage 2 (fine + self-augmentation) differs; same step budget and seed. Cells: mean ± std of the "
                  "fine method (coarse where a variant has no fine stage).")
    doc.table(*table2(ablation))
    if chart:
        doc.image(chart.name, "ablations: clean and occluded protocols")
    paired = paired_differences(ablation, out_dir)
    if paired and paired[1]:
        doc.heading("Paired differences", 3)
        doc.paragraph("The full model minus each variant, face by face over the same evaluation samples: mean "
                      "difference ± its standard error. The standard deviations above mostly measure how faces differ; "
                      "these measure how the variants differ. They say nothing of training noise (one seed).")
        doc.table(*paired)
    doc.heading("Variants", 3)
    doc.table(["variant", "label", "config hash", "overrides", "report"],
              [[name, entry["label"], entry.get("config_hash", ""), json.dumps(entry.get("overrides", {}), sort_keys=True),
                f"{name}/report.md"] for name, entry in ablation["variants"].items()])
    return doc.write(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--ablations", action="store_true", help="the folder is a sweep's (experiments.sweep)")
    args = parser.parse_args(argv)
    if not (args.folder / "metrics.json").is_file():
        print(f"error: {args.folder / 'metrics.json'} not found; run experiments.evaluate or experiments.sweep first",
              file=sys.stderr)
        return 2
    md, page = (write_ablation_report if args.ablations else write_report)(args.folder)
    print(f"wrote {md} and {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
