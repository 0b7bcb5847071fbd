"""Trains a small model in PyTorch and exports it with torch.jit.save, following Driftwood's
`driftwood-hashed-bag-v1` contract (used by tests/tests/it/torchscript.rs).

usage: torchscript_model.py FEATURES.json OUT.pt PREDICTIONS.json [--classes N]

FEATURES.json (written by the Rust test with Driftwood's own featurizer):
  {"buckets": 65536, "labels": [...],
   "train": [{"features": [[bucket, weight], ...], "label": index}, ...],
   "eval": [[[bucket, weight], ...], ...]}
Writes the module to OUT.pt and the probabilities PyTorch computes on "eval" to PREDICTIONS.json.
--classes overrides the output width (to make a module that breaks the contract).
"""
import json
import sys

import torch


class HashedBag(torch.nn.Module):
    """forward(indices int64[N], offsets int64[B], weights float32[N]) -> logits float32[B, C]"""

    def __init__(self, buckets: int, classes: int):
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(buckets, classes, mode="sum")
        self.bias = torch.nn.Parameter(torch.zeros(classes))
        torch.nn.init.zeros_(self.bag.weight)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.bag(indices, offsets, per_sample_weights=weights) + self.bias


def batch(docs):
    indices, offsets, weights = [], [], []
    for doc in docs:
        offsets.append(len(indices))
        for b, w in doc:
            indices.append(int(b))
            weights.append(float(w))
    return (torch.tensor(indices, dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64),
            torch.tensor(weights, dtype=torch.float32))


def main():
    features_path, out_path, predictions_path = sys.argv[1:4]
    data = json.load(open(features_path))
    classes = len(data["labels"])
    if "--classes" in sys.argv:
        classes = int(sys.argv[sys.argv.index("--classes") + 1])
    torch.manual_seed(0)
    model = HashedBag(data["buckets"], classes)
    x = batch([r["features"] for r in data["train"]])
    y = torch.tensor([r["label"] for r in data["train"]], dtype=torch.int64)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(*x), y)
        loss.backward()
        opt.step()
    model.eval()
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, out_path)
    loaded = torch.jit.load(out_path)
    with torch.no_grad():
        probs = loaded(*batch(data["eval"])).softmax(-1)
    json.dump({"probabilities": probs.tolist(), "final_loss": float(loss)}, open(predictions_path, "w"))


if __name__ == "__main__":
    main()
