"""Import speed and memory on generated Amazon-format files (no real data needed).

Measures, in one run:
1. meta lines/s: ``parse_literal`` + catalog builder over N synthetic 2014 meta lines (gzip),
   against ``ast.literal_eval`` on a sample of the same lines (the ratio is the speed-up);
2. ``.b`` records/s: scanning the ASINs and copying the vectors of a generated features file;
3. peak resident memory of a whole ``lrprec import amazon2014 --features`` of a 50,000-item
   ``.b`` file (820 MB), in a child process, against the file size.

    .venv/bin/python benchmarks/bench_import.py [--lines 200000] [--records 50000]
"""
from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lrprec.data.amazon import _read_meta
from lrprec.data.amazon_features import FEATURE_DIM, feature_dtype, scan_features
from lrprec.data.pyliteral import parse_literal
from lrprec.data.importing.builder import CatalogBuilder
from lrprec.data.importing.report import ImportReport

WORDS = ["Men's", "Women's", "Classic", "Slim", "Fit", "Cotton", "T-Shirt", "Boot", 'Size 10"', "café", "–", "Jeans", "Dress", "Kids'", "Leather"]


def asin(k: int) -> str:
    return f"B{k:09d}"


def meta_line(k: int, n: int, rng: random.Random, related: int) -> str:
    """One 2014-style meta record as Python repr (about a third with apostrophes or quotes in the title)."""
    rec = {
        "asin": asin(k),
        "title": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 9))),
        "price": round(rng.uniform(3, 200), 2),
        "imUrl": f"http://ecx.images-amazon.com/images/I/{k:08d}._SY300_.jpg",
        "related": {
            "also_bought": [asin(rng.randrange(n)) for _ in range(rng.randrange(related))],
            "also_viewed": [asin(rng.randrange(n)) for _ in range(rng.randrange(related // 2 + 1))],
            "bought_together": [asin(rng.randrange(n)) for _ in range(rng.randrange(3))],
        },
        "salesRank": {"Clothing": rng.randrange(1, 10**6)},
        "categories": [["Clothing, Shoes & Jewelry", rng.choice(["Men", "Women", "Girls", "Boys", "Baby"]), "Shirts"]],
    }
    return repr(rec)


def write_meta(path: Path, n: int, related: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        for k in range(n):
            f.write(meta_line(k, n, rng, related) + "\n")


def write_b(path: Path, n: int, chunk: int = 2048) -> None:
    dt = feature_dtype()
    with open(path, "wb") as f:
        for s in range(0, n, chunk):
            c = min(chunk, n - s)
            rec = np.zeros(c, dtype=dt)
            rec["asin"] = [asin(k).encode() for k in range(s, s + c)]
            rec["f"] = np.arange(s, s + c, dtype="<f4")[:, None]
            f.write(rec.tobytes())


def bench_meta(tmp: Path, lines: int) -> dict:
    path = tmp / "meta_bench.json.gz"
    write_meta(path, lines, related=60)
    report = ImportReport("amazon2014", {}, ())
    builder = CatalogBuilder(report)
    t, c = time.perf_counter(), time.process_time()
    _read_meta(path, builder, year=2014, category_level=0, progress=False)
    fast, fast_cpu = time.perf_counter() - t, time.process_time() - c
    sample = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for k, line in enumerate(f):
            if k >= min(lines, 20000):
                break
            sample.append(line)
    c = time.process_time()
    for line in sample:
        ast.literal_eval(line)
    slow = (time.process_time() - c) / len(sample)
    c = time.process_time()
    for line in sample:
        parse_literal(line)
    parse_only = (time.process_time() - c) / len(sample)
    return {"lines": lines, "bytes_gz": path.stat().st_size, "relations": len(builder.rel_b), "seconds": fast,
            "lines_per_s": lines / fast, "lines_per_cpu_s": lines / fast_cpu, "parse_only_lines_per_s": 1 / parse_only, "literal_eval_lines_per_s": 1 / slow}


CHILD = """
import json, resource, sys, time
from lrprec.data.amazon import import_amazon2014
t, c = time.perf_counter(), time.process_time()
rep = import_amazon2014(sys.argv[1], sys.argv[3], features=sys.argv[2], progress=False)
dt, dc = time.perf_counter() - t, time.process_time() - c
status = open('/proc/self/status').read()
hwm = int([l for l in status.splitlines() if l.startswith('VmHWM')][0].split()[1]) * 1024
print(json.dumps({"seconds": dt, "cpu_seconds": dc, "peak_rss": hwm, "items": rep["items"]}))
"""
BASELINE = """
import json
import io
import lrprec.data.amazon, lrprec.data.catalog, lrprec.data.splits, pyarrow as pa, pyarrow.parquet as pq, tqdm
pq.write_table(pa.table({"x": pa.array(["a", "b"])}), io.BytesIO())  # arrow's allocator and kernels warmed up
status = open('/proc/self/status').read()
print(json.dumps({"peak_rss": int([l for l in status.splitlines() if l.startswith('VmHWM')][0].split()[1]) * 1024}))
"""


def bench_features(tmp: Path, records: int) -> dict:
    meta, feats = tmp / "meta_feat.json.gz", tmp / "image_features_bench.b"
    write_meta(meta, records, related=6, seed=1)
    write_b(feats, records)
    size = feats.stat().st_size
    # records/s of the two passes over the .b file (scan ASINs, copy vectors), in this process
    report = ImportReport("amazon2014", {}, ())
    builder = CatalogBuilder(report)
    _read_meta(meta, builder, year=2014, category_level=0, progress=False)
    t, c = time.perf_counter(), time.process_time()
    rows = scan_features(feats, builder, progress=False)
    scan, scan_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    rows.write(tmp / "features.npy", np.sort(rows.record[rows.record >= 0]))
    copy, copy_cpu = time.perf_counter() - t, time.process_time() - c
    (tmp / "features.npy").unlink()
    # the whole import in a fresh process: peak RSS against the file size
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    child = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(meta), str(feats), str(tmp / "cat")], check=True, capture_output=True, text=True, env=env).stdout)
    base = json.loads(subprocess.run([sys.executable, "-c", BASELINE], check=True, capture_output=True, text=True, env=env).stdout)
    return {"records": records, "file_bytes": size, "scan_records_per_s": records / scan, "copy_records_per_s": records / copy,
            "scan_records_per_cpu_s": records / scan_cpu, "copy_records_per_cpu_s": records / copy_cpu,
            "copy_mb_per_s": size / copy / 1e6, "import_seconds": child["seconds"], "import_cpu_seconds": child["cpu_seconds"], "peak_rss": child["peak_rss"],
            "baseline_rss": base["peak_rss"], "items": child["items"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000, help="synthetic meta lines")
    ap.add_argument("--records", type=int, default=50_000, help="records in the generated .b file")
    ap.add_argument("--tmp", default=None, help="scratch folder (needs ~2x 16 KB per record)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        tmp = Path(d)
        m = bench_meta(tmp, args.lines)
        f = bench_features(tmp, args.records)
    mb = 1024 * 1024
    print("| measure | wall clock | CPU time |\n|---|---|---|")
    print(f"| meta lines (2014, gzip, ~45 related ASINs/line) | {m['lines']:,} | ({m['relations']:,} related entries) |")
    print(f"| meta import: lines/s (read + parse + builder) | {m['lines_per_s']:,.0f} | {m['lines_per_cpu_s']:,.0f} |")
    print(f"| parse_literal alone: lines/s | | {m['parse_only_lines_per_s']:,.0f} |")
    print(f"| ast.literal_eval: lines/s | | {m['literal_eval_lines_per_s']:,.0f} |")
    print(f"| speed-up parse_literal / ast.literal_eval | | {m['parse_only_lines_per_s'] / m['literal_eval_lines_per_s']:.1f}x |")
    print(f"| .b records ({FEATURE_DIM} float32 + 10-byte ASIN) | {f['records']:,} | ({f['file_bytes'] / mb:,.0f} MiB) |")
    print(f"| .b scan (ASINs): records/s | {f['scan_records_per_s']:,.0f} | {f['scan_records_per_cpu_s']:,.0f} |")
    print(f"| .b copy to features.npy: records/s | {f['copy_records_per_s']:,.0f} ({f['copy_mb_per_s']:,.0f} MB/s) | {f['copy_records_per_cpu_s']:,.0f} |")
    print(f"| whole import with --features ({f['items']:,} items): seconds | {f['import_seconds']:.1f} | {f['import_cpu_seconds']:.1f} |")
    print(f"| peak RSS of that import | {f['peak_rss'] / mb:,.0f} MiB | (interpreter + libraries, warmed up, alone: {f['baseline_rss'] / mb:,.0f} MiB) |")
    print(f"| peak RSS / .b file size | {f['peak_rss'] / f['file_bytes']:.3f} | |")
    print(f"\n{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end (timings are wall-clock).")


if __name__ == "__main__":
    main()
