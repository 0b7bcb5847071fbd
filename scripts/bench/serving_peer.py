"""The Python peer of the serving benchmark: FastAPI + uvicorn serving a scikit-learn
HashingVectorizer + LogisticRegression trained on the same corpus JSONL as Driftwood's model.

    python serving_peer.py PORT CORPUS.jsonl

Same request and response shape as Driftwood's POST /v1/predict for one text:
{"text": "..."} -> {"label": "...", "probabilities": {...}}. One uvicorn worker (its default),
a plain `def` handler (FastAPI runs it on its thread pool), no access log.
"""

import json
import sys
import time

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

port, corpus = int(sys.argv[1]), sys.argv[2]
texts, labels = [], []
with open(corpus) as f:
    for line in f:
        r = json.loads(line)
        texts.append(r["text"])
        labels.append(r["label"])
started = time.time()
model = make_pipeline(
    HashingVectorizer(n_features=2**18, alternate_sign=False, lowercase=True),
    TfidfTransformer(),
    LogisticRegression(max_iter=1000),
)
model.fit(texts, labels)
classes = [str(c) for c in model.classes_]
print(f"peer trained on {len(texts)} texts in {time.time() - started:.1f} s", file=sys.stderr, flush=True)

app = FastAPI()


class PredictRequest(BaseModel):
    text: str


@app.post("/v1/predict")
def predict(req: PredictRequest):
    p = model.predict_proba([req.text])[0]
    return {"label": classes[int(np.argmax(p))], "probabilities": dict(zip(classes, p.tolist()))}


@app.get("/healthz")
def healthz():
    return "ok"


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
