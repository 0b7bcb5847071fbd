"""The Python peer of scripts/bench/drift: scipy ks_2samp + PSI in numpy on the same samples."""
import json
import sys
import time

import numpy as np
from scipy import stats

d = sys.argv[1]
reference = np.fromfile(f"{d}/reference.f64", dtype="<f8")
live = np.fromfile(f"{d}/live.f64", dtype="<f8")

start = time.perf_counter()
edges = np.quantile(reference, np.arange(1, 10) / 10)
k = len(edges) + 1
n = len(live)
expected = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=k) / len(reference)
counts = np.bincount(np.searchsorted(edges, live, side="left"), minlength=k)
eps = 0.5
a = (counts + eps) / (n + k * eps)
e = (expected * n + eps) / (n + k * eps)
psi = float(np.sum((a - e) * np.log(a / e)))
r = stats.ks_2samp(reference, live)
secs = time.perf_counter() - start
print(json.dumps({"bench": "drift", "what": "scipy ks_2samp + numpy PSI", "n": len(reference), "secs": secs,
                  "psi": psi, "ks_d": float(r.statistic), "ks_p": float(r.pvalue)}))

# Streaming peer: updating a window's histogram value by value in Python.
start = time.perf_counter()
m = 200_000
hist = np.zeros(k, dtype=np.int64)
for v in live[:m].tolist():
    hist[np.searchsorted(edges, v)] += 1
secs = time.perf_counter() - start
print(json.dumps({"bench": "drift", "what": "python per-event histogram update", "n": m, "secs": secs,
                  "events_per_sec": m / secs}))
