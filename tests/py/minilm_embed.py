"""Sentence embeddings of MiniLM-L6 by sentence-transformers, the reference the Rust encoder is
checked against (tests/tests/it/minilm.rs).

    minilm_embed.py MODEL_DIR MAX_SEQ_LENGTH < texts.json > embeddings.json

texts.json is a JSON list of strings; the output is a JSON list of normalized embeddings.
"""
import json
import sys

import torch
from sentence_transformers import SentenceTransformer


def main():
    model_dir, max_len = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = max_len
    texts = json.load(sys.stdin)
    out = model.encode(texts, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    json.dump([[float(x) for x in row] for row in out], sys.stdout)


if __name__ == "__main__":
    main()
