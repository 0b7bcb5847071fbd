"""The Python peer of the MiniLM inference benchmark: sentence-transformers encoding the same
texts with the same MiniLM-L6 files and the same thread count.

    python minilm_peer.py MODEL_DIR TEXTS.jsonl THREADS MAX_TOKENS BATCH REPEATS

Prints one JSON line: texts, the best seconds of REPEATS and docs/s.
"""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, path, threads, max_tokens, batch, repeats = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
torch.set_num_threads(threads)
texts = [json.loads(line)["text"] for line in open(path) if line.strip()]
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = max_tokens
model.encode(texts[:64], batch_size=batch)  # warm-up
best = None
for _ in range(repeats):
    start = time.perf_counter()
    model.encode(texts, batch_size=batch, convert_to_numpy=True)
    seconds = time.perf_counter() - start
    best = seconds if best is None else min(best, seconds)
print(json.dumps({"texts": len(texts), "seconds": best, "docs_per_s": len(texts) / best}))
