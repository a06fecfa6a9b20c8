"""The results tables of the docs and the README, generated from the recorded benchmarks (bench/results/*.json).

    python bench/tables.py            # rewrite docs/generated/*.md and the README's marked block
    python bench/tables.py --check    # exit 1 (naming the tables) if any differs from what is committed

Tables (``TABLES``: name -> the records it reads and the function that writes it; a new table is
one function and one entry; the prose readings among them are in ``bench/readings.py``, the
shared record helpers in ``bench/records.py``). Each is written to ``docs/generated/NAME.md``,
which the docs pages include (``--8<-- "docs/generated/NAME.md"``); ``README_TABLE`` also goes into README.md between
``<!-- generated: NAME -->`` and ``<!-- /generated -->``. After a benchmark is re-recorded, one
run of this script brings every table up to date; ``tests/test_docs.py`` checks that the
committed tables are what this script writes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable

from readings import (  # (bench/ is this script's directory; the tests and the docs hook put it on the path)
    presence_cost_reading,
    speed_reading,
    throughput_reading,
    toyworld_protocols_reading,
    toyworld_reading,
    tune_robustness_reading,
)
from records import PROTOCOLS, ROOT, TOY, TOY_CLASSES, _latency, bench_module, markdown, one, record

OUT = ROOT / "docs" / "generated"
README = ROOT / "README.md"
README_TABLE = "readme-results"

TOY_ROW_NOTES = {
    "full": "default pipeline",
    "vocab_all": "all six names in the caption",
    "vocab_reference": "all six in the caption, the labels' maps kept: `eval --labels reference`",
    "vocab_detect": "presence stage over all six",
    "vocab_detect_recurrent": "+ CLIP check",
}
"""What a row name of ``bench/toyworld.py`` means, where the name alone does not say it."""


def _toy_rows(rows: dict[str, dict]) -> str:
    out = []
    for name, r in rows.items():
        label = f"`{name}`" + (f" ({TOY_ROW_NOTES[name]})" if name in TOY_ROW_NOTES else "")
        out.append([label, one(r["miou"]), *(one(r["per_class"][c]) for c in TOY_CLASSES)])
    return markdown(["row", "mIoU", *TOY_CLASSES], out)


def toyworld_stages() -> str:
    """Every stage of the pipeline on held-out seed 7 (``rows``)."""
    return _toy_rows(record(TOY)["rows"])


def toyworld_options() -> str:
    """The options measured beside the default in the same run (``options``)."""
    return _toy_rows(record(TOY)["options"])


SHAPE_WORLD = {"shape-world BLIP checkpoint": "toyworld_shapes_seed7.json",
               "distilled tower + 32 min ITM": "toyworld_shapes_seed7_distilled.json",
               "`toy` (textured-world BLIP)": "toyworld_shapes_seed7_toy.json",
               "BridgeTower, 6-min smoke": "toyworld_shapes_seed7_bridgetower_smoke.json",
               "`toy` on its own world": TOY}
SHAPE_ROWS = ("random_weights", "no_vlm", "attention", "gradcam", "gradcam+dropout", "full", "gradcam+blur+crf",
              "attention+blur+crf", "vocab_all", "vocab_detect", "oracle_grid_maps")


LEARNABILITY = {"small CNN": "shape_learnability_cnn.json", "the toy BLIP's vision tower (ViT)": "shape_learnability_vit.json"}
"""The shape world's easiest task, learned from image labels by two networks (``tools/toyworld/learnability.py``)."""


def shape_learnability() -> str:
    """Held-out accuracy by training step, one column per network (blank past a network's last step)."""
    curves = {name: {row["step"]: row for row in record(f)["curve"]} for name, f in LEARNABILITY.items()}
    steps = sorted({s for c in curves.values() for s in c if s % 300 == 0 or s == max(c)})
    rows = [[str(s), *(f"{100 * c[s]['held_out_accuracy']:.1f}%" if s in c else "" for c in curves.values())]
            for s in steps]
    return markdown(["training step (32 fresh images each)", *curves], rows)


def shape_world() -> str:
    """The shape world's held-out seed 7 beside the textured world's: mIoU per row and model."""
    records = {name: record(f) for name, f in SHAPE_WORLD.items()}

    def cell(r: dict, row: str) -> str:
        got = r["rows"].get(row) or r["options"].get(row)
        tags = r.get("tags", {}).get(row)
        return one(got["miou"]) + (f" (tags F1 {one(tags['f1'])})" if row == "vocab_detect" and tags else "")

    header = [f"{n} ({r['images']} images)" for n, r in records.items()]
    return markdown(["row", *header], [[f"`{row}`", *(cell(r, row) for r in records.values())] for row in SHAPE_ROWS])


def toyworld_protocols() -> str:
    """``pnpovss eval --labels L`` on seed 7: one record per protocol."""
    rows = []
    for labels in PROTOCOLS:
        r = record(f"toyworld_eval_{labels}_seed7.json")
        tags = one(r["tags"]["f1"]) if "tags" in r else ("(all six)" if labels == "all" else "(given)")
        rows.append([f"`{labels}`", one(r["miou"]), *(one(r["per_class"][c]) for c in TOY_CLASSES), tags])
    return markdown(["`--labels`", "mIoU", *TOY_CLASSES, "tags F1"], rows)


def toyworld_tags() -> str:
    """Tag precision/recall/F1 of the rows that choose their own classes."""
    tags = record(TOY)["tags"]
    return markdown(["row", "precision", "recall", "F1", "exact label set (% of images)"],
                    [[f"`{n}`", one(t["precision"]), one(t["recall"]), one(t["f1"]), one(t["exact_sets"])]
                     for n, t in tags.items()])


README_ROWS = {
    "random_weights": "the toy BLIP with random weights",
    "no_vlm": "no VLM: colour foreground + the largest present class",
    "attention": "raw cross-attention, no post-processing",
    "full": "**the default pipeline** (labels given)",
    "vocab_detect": "**presence stage picks from all six shapes** (no labels)",
    "oracle_grid_maps": "exact patch maps through the default post-processing (ceiling)",
}


def readme_results() -> str:
    """The README's one small table: what the toy world says, held-out seed 7."""
    rows = record(TOY)["rows"]
    return markdown(["toy world, held-out seed 7", "mIoU"],
                    [[f"{text} (`{name}`)", one(rows[name]["miou"])] for name, text in README_ROWS.items()])


def _drop_empty_columns(table: str) -> str:
    """Leave out the columns whose every cell is ``-`` (rows the record did not run)."""
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()]
    keep = [i for i in range(len(lines[0])) if any(row[i] != "-" for row in lines[2:])]
    return markdown([lines[0][i] for i in keep], [[row[i] for i in keep] for row in lines[2:]])


def speed_full() -> str:
    """``bench/speed.py``'s table of the full run, without the rows it did not run."""
    return _drop_empty_columns(bench_module("speed").markdown(record("speed_full.json")))


BF16_ROWS = ("reference_pattern", "pnpovss", "pnpovss_bf16", "pnpovss_bf16_unpacked", "pnpovss_bf16_compiled")


def speed_bf16() -> str:
    """The bf16 record: seconds per image of each round and peak memory, and the JSON's ratios."""
    result = record("speed_quick_bf16_packed.json")
    ratios = {r["classes"]: r for r in result["ratios"]}
    rows = []
    for classes in sorted(ratios):
        cells = []
        for name in BF16_ROWS:
            r = next(r for r in result["rows"] if r["name"] == name and r["classes"] == classes)
            each = " / ".join(f"{s:.1f}" for s in r["seconds_each"])
            cells.append(f"{each} s, {r['peak_mb'] / 1024:.1f} GB")
        rows.append([classes, *cells, f"{ratios[classes]['bf16_over_pnpovss']}x",
                     f"{ratios[classes]['bf16_speedup_vs_reference']:.1f}x"])
    return markdown(["classes", *BF16_ROWS, "bf16 / pnpovss", "reference / bf16"], rows)


def throughput() -> str:
    return bench_module("throughput").markdown(record("throughput.json"))


PRESENCE_ROWS = {
    "pipeline": "default pipeline ({classes} classes, T = {drop_iters} passes)",
    "presence_20": "presence, 20 candidates (Pascal VOC)",
    "presence_150": "presence, 150 candidates (ADE20K)",
    "clip_opinion_150": "CLIP's second opinion over the 150 (one image forward)",
    "clip_text_150": "CLIP text embeddings of the 150 (once per candidate list and process)",
    "presence_150_per_caption": "presence, 150 candidates, image keys/values projected per caption",
}


def presence_cost() -> str:
    result = record("presence_speed.json")
    rows = []
    for name, text in PRESENCE_ROWS.items():
        r = result["rows"][name]
        label = text.format(classes=result["pipeline_classes"], drop_iters=result["drop_iters"])
        rows.append([label, f"{r['seconds']:.2f}", f"{r.get('ratio', 1):.2f}" if "ratio" in r else "1"])
    return markdown(["row", "seconds", "/ default pipeline"], rows)


def large_image() -> str:
    cli = record("large_image_cli.json")["cli"]
    agreement = record("large_image_agreement.json")["agreement"]
    full, default = cli["rows"]["full_resolution"], cli["rows"]["default"]
    rows = [[f"{cli['image']}, whole `pnpovss segment` run", "full resolution",
             f"{full['cpu_seconds']:.0f} s CPU ({full['seconds']:.0f} s wall)", f"{full['peak_rss_gib']:.2f} GiB", "-", "-"],
            ["", f"working size {agreement['postprocess_max_side']} (default)",
             f"{default['cpu_seconds']:.1f} s CPU ({default['seconds']:.0f} s wall)", f"{default['peak_rss_gib']:.2f} GiB",
             f"{100 * cli['label_agreement']:.1f}% of pixels", "-"]]
    for size, s in agreement["sizes"].items():
        rows.append([f"toy images rendered at {size} px ({s['images']}, seed {agreement['seed']})", "full resolution",
                     f"{s['seconds_per_image_full']:.1f} s / image", "", "-", f"{s['miou_full']:.2f}"])
        rows.append(["", f"working size {s['working_size']}", f"{s['seconds_per_image_working']:.1f} s / image", "",
                     f"{100 * s['label_agreement_mean']:.1f}% (min {100 * s['label_agreement_min']:.1f}%)",
                     f"{s['miou_working']:.2f}"])
    return markdown(["input", "post-processing", "time", "peak memory", "labels equal to full resolution",
                     "mIoU vs ground truth"], rows)


def resolution() -> str:
    run = record("resolution_seed11.json")["runs"][0]
    rows = []
    for size, v in run["sizes"].items():
        native = size == min(run["sizes"], key=int)
        def cell(name: str) -> str:
            r = v[name]
            return f"{r['miou']:.2f}" + ("" if native else f" ({100 * r['agreement_with_native']:.1f}% as native)")
        rows.append([f"{size}" + (" (native)" if native else ""), *(cell(n) for n in ("default", "relative", "absolute", "no_crf"))])
    return markdown(["size", f"toy preset (`crf_reference_side={run['default_crf_reference_side']}`)",
                     f"library default (`{run['reference_side']}`)", "CRF in pixels (`null`, reference)",
                     "no CRF (blur + argmax)"], rows)


def resolution_isolated() -> str:
    result = record("resolution_dev_isolated.json")
    rows = []
    for run in result["runs"]:
        for size, v in run["sizes"].items():
            rows.append([str(run["seed"]), size, *(f"{v[n]['miou']:.2f}" for n in ("default", "absolute"))])
    return markdown(["seed", "size", f"toy preset (`crf_reference_side={result['runs'][0]['default_crf_reference_side']}`)",
                     "CRF in pixels"], rows)


def demo_latency() -> str:
    result = record("demo_latency.json")
    rows = []
    for image, parts in result["images"].items():
        for change, key in (("threshold, blur or CRF (maps cached)", "postprocess_only"),
                            ("new image (GradCAM + DropOut)", "full")):
            rows.append([image, change, *(_latency(parts.get(where, {}).get(key)) for where in ("engine", "http", "browser"))])
    large = result["large_upload"]
    photo = f"{large['side']}x{large['side']} JPEG photo ({large['photo_bytes'] / 1e6:.0f} MB)"
    rows.append([photo, "threshold change (maps cached)", "", "", _latency(large["browser"]["threshold_change"])])
    rows.append([photo, "Segment, upload included", "", "",
                 f"{_latency(large['browser']['segment'])}; `pnpovss segment` on the file: "
                 f"{large['cli_seconds']['median_s']:.1f} s"])
    return markdown(["input", "change", "engine", "HTTP endpoint", "in the browser"], rows)


def tune_robustness() -> str:
    return bench_module("tune_robustness").table(record("tune_robustness.json")["pairs"])


def tune_truth_dev() -> str:
    return bench_module("tune_truth").table(record("tune_truth_dev.json"))


TABLES: dict[str, tuple[tuple[str, ...], Callable[[], str]]] = {
    "toyworld-stages": ((TOY,), toyworld_stages),
    "toyworld-options": ((TOY,), toyworld_options),
    "toyworld-tags": ((TOY,), toyworld_tags),
    "toyworld-protocols": (tuple(f"toyworld_eval_{p}_seed7.json" for p in PROTOCOLS), toyworld_protocols),
    "toyworld-reading": ((TOY, "toyworld_mapstats_seed0.json"), toyworld_reading),
    "toyworld-protocols-reading": ((TOY, "toyworld_eval_gt_seed7.json", "toyworld_eval_reference_seed7.json"),
                                   toyworld_protocols_reading),
    README_TABLE: ((TOY,), readme_results),
    "speed-full": (("speed_full.json",), speed_full),
    "speed-reading": (("speed_full.json", TOY), speed_reading),
    "speed-bf16": (("speed_quick_bf16_packed.json",), speed_bf16),
    "throughput": (("throughput.json",), throughput),
    "throughput-reading": (("throughput.json",), throughput_reading),
    "presence-cost": (("presence_speed.json",), presence_cost),
    "presence-cost-reading": (("presence_speed.json",), presence_cost_reading),
    "large-image": (("large_image_cli.json", "large_image_agreement.json"), large_image),
    "resolution": (("resolution_seed11.json",), resolution),
    "shape-world": (tuple(SHAPE_WORLD.values()), shape_world),
    "shape-learnability": (tuple(LEARNABILITY.values()), shape_learnability),
    "resolution-isolated": (("resolution_dev_isolated.json",), resolution_isolated),
    "demo-latency": (("demo_latency.json",), demo_latency),
    "tune-robustness": (("tune_robustness.json",), tune_robustness),
    "tune-robustness-reading": (("tune_robustness.json", "tune_robustness_dev.json"), tune_robustness_reading),
    "tune-truth-dev": (("tune_truth_dev.json",), tune_truth_dev),
}
"""Name -> (the records under bench/results/ it reads, the function that writes it)."""


def render(name: str) -> str:
    """Table ``name`` as written to ``docs/generated/NAME.md``: a comment naming its sources, the table."""
    sources, make = TABLES[name]
    origin = ", ".join(f"bench/results/{s}" for s in sources)
    return f"<!-- generated by bench/tables.py from {origin}; do not edit -->\n{make()}\n"


README_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)


def readme_with_tables(text: str) -> str:
    """README text with every marked block replaced by its table."""
    return README_BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def expected_files() -> dict[Path, str]:
    """Every file this script writes, with the content it writes."""
    files = {OUT / f"{name}.md": render(name) for name in TABLES}
    files[README] = readme_with_tables(README.read_text())
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 naming the stale files")
    args = ap.parse_args()
    stale = []
    for path, text in expected_files().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path.relative_to(ROOT).as_posix())
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check and stale:
        print("stale (rerun python bench/tables.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    print(("checked " if args.check else "wrote ") + f"{len(TABLES)} tables" + (f"; updated {', '.join(stale)}" if stale and not args.check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
