"""The Python peers of scripts/bench/data_path, printing the same JSON lines as the Rust side.

consume BROKERS TOPIC N WARM   confluent-kafka consume() in batches of 10 000: once doing no work,
                          once decoding each value as JSON, validating `text`, and building a
                          pyarrow RecordBatch per batch (what the Rust BatchReader does). Like
                          the Rust readers, it prefetches for WARM seconds before timing
                          (0: timed from the broker).
clean FILE.jsonl          the default cleaning steps in pandas `.str` and in pyarrow.compute.

Differences from the Rust plan, all in the peers' favour: pyarrow has no HTML-entity decoder,
so only &amp; &lt; &gt; &quot; &#39; &nbsp; are replaced; neither peer handles folded
Subject headers. Timings exclude reading the file.
"""

import html
import json
import re
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc


def report(bench, what, records, nbytes, secs):
    print(json.dumps({
        "bench": bench, "what": what, "records": records, "bytes": nbytes, "secs": secs,
        "records_per_sec": records / secs, "mb_per_sec": nbytes / 1e6 / secs,
    }), flush=True)


RAW = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("label", pa.string()), ("source", pa.string()),
    ("ts", pa.timestamp("ms", tz="+00:00")), ("meta", pa.string()),
    ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
])


SKIP = 10_000  # bench_data_path.rs's SKIP


def consume(brokers, topic, n, build, warm):
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
    c = Consumer({
        "bootstrap.servers": brokers, "group.id": "bench.py", "enable.auto.commit": False,
        "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20, "fetch.wait.max.ms": 100,
        "queued.max.messages.kbytes": 2097151, "queued.min.messages": 10000000,
    })
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    time.sleep(warm)  # let librdkafka prefetch, as the Rust readers do
    # As the Rust readers do: the clock starts once SKIP records have been read (fresh memory is
    # faulted in), then N records are timed; the topic holds N + 2 * SKIP.
    seen = timed = nbytes = 0
    start = None
    deadline = time.time() + 600
    while timed < n and time.time() < deadline:
        msgs = c.consume(num_messages=10000, timeout=0.1)
        if not msgs:
            continue
        batch_bytes = 0
        if build:
            cols = {f.name: [] for f in RAW}
            for m in msgs:
                v = m.value()
                batch_bytes += len(v)
                try:
                    obj = json.loads(v)
                except ValueError:
                    continue
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    continue
                cols["id"].append(obj.get("id") or f"p{m.partition()}-o{m.offset()}")
                cols["text"].append(obj["text"])
                cols["label"].append(obj.get("label"))
                cols["source"].append(obj.get("source"))
                cols["ts"].append(m.timestamp()[1])
                meta = obj.get("meta")
                cols["meta"].append(json.dumps(meta) if meta is not None else None)
                cols["kafka_partition"].append(m.partition())
                cols["kafka_offset"].append(m.offset())
            pa.RecordBatch.from_pydict(cols, schema=RAW)
        else:
            for m in msgs:
                batch_bytes += len(m.value())
        seen += len(msgs)
        if start is not None:
            timed += len(msgs)
            nbytes += batch_bytes
        elif seen >= SKIP:
            start = time.perf_counter()
    secs = time.perf_counter() - start
    c.close()
    if timed < n:
        sys.exit(f"read {seen} of {n + SKIP} records")
    phase = "prefetched" if warm else "from broker"
    what = "confluent-kafka consume() -> json -> pyarrow RecordBatch" if build else \
        "confluent-kafka consume() batches, no work"
    what += f" ({phase})"
    report("consume", what, timed, nbytes, secs)


HEADER_START = r"^(?:From \S|[A-Za-z0-9][A-Za-z0-9-]*:[ \t])"
URL = r"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>\"']+"
EMAIL = r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"
NUMBER = r"\b\d+(?:[.,:]\d+)*\b"
CONTROL = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]"


def clean_pandas(texts):
    import pandas as pd
    s = pd.Series(texts, dtype=object)
    is_mail = s.str.match(HEADER_START)
    parts = s.str.split("\n\n", n=1, expand=True)
    body = parts[1].fillna("")
    subject = parts[0].str.extract(r"(?im)^subject:[ \t]*(.*)$")[0].fillna("")
    s = s.where(~is_mail, subject + "\n" + body)
    s = s.str.replace(r"(?is)<(script|style)\b.*?</\1\s*>", " ", regex=True)
    s = s.str.replace(r"(?s)<!--.*?-->", " ", regex=True)
    s = s.str.replace(r"</?[A-Za-z!?][^>]*>", " ", regex=True)
    s = s.map(html.unescape)
    s = s.str.normalize("NFKC")
    s = s.str.replace(CONTROL, "", regex=True)
    s = s.str.lower()
    s = s.str.replace(URL, " <url> ", regex=True)
    s = s.str.replace(EMAIL, " <email> ", regex=True)
    s = s.str.replace(NUMBER, " <num> ", regex=True)
    s = s.str.replace(r"\s+", " ", regex=True).str.strip()
    s = s.str.slice(0, 20000)
    return s[s.str.len() > 0]


def clean_pyarrow(texts):
    a = pa.array(texts, type=pa.large_string())
    is_mail = pc.match_substring_regex(a, HEADER_START)
    # Keep the Subject value, drop the rest of the header block.
    subject = pc.struct_field(pc.extract_regex(a, r"(?im)^subject:[ \t]*(?P<s>[^\n]*)"), [0])
    body = pc.replace_substring_regex(a, r"(?s)^.*?\n\n", "", max_replacements=1)
    stripped = pc.binary_join_element_wise(pc.fill_null(subject, ""), body, pa.scalar("\n", pa.large_string()))
    a = pc.if_else(is_mail, stripped, a)
    a = pc.replace_substring_regex(a, r"(?is)<script\b.*?</script\s*>", " ")
    a = pc.replace_substring_regex(a, r"(?is)<style\b.*?</style\s*>", " ")
    a = pc.replace_substring_regex(a, r"(?s)<!--.*?-->", " ")
    a = pc.replace_substring_regex(a, r"</?[A-Za-z!?][^>]*>", " ")
    for entity, ch in [("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"),
                       ("&nbsp;", "\u00a0"), ("&amp;", "&")]:
        a = pc.replace_substring(a, entity, ch)
    a = pc.utf8_normalize(a, "NFKC")
    a = pc.replace_substring_regex(a, CONTROL, "")
    a = pc.utf8_lower(a)
    a = pc.replace_substring_regex(a, URL, " <url> ")
    a = pc.replace_substring_regex(a, EMAIL, " <email> ")
    a = pc.replace_substring_regex(a, NUMBER, " <num> ")
    a = pc.replace_substring_regex(a, r"\s+", " ")
    a = pc.utf8_trim_whitespace(a)
    a = pc.utf8_slice_codeunits(a, 0, 20000)
    return pc.filter(a, pc.greater(pc.utf8_length(a), 0))


def clean(path):
    texts = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
    nbytes = sum(len(t.encode()) for t in texts)
    for what, fn in [("pandas .str", clean_pandas), ("pyarrow.compute", clean_pyarrow)]:
        start = time.perf_counter()
        kept = fn(texts)
        secs = time.perf_counter() - start
        report("clean", what, len(texts), nbytes, secs)
        print(f"  kept {len(kept)} of {len(texts)} rows", file=sys.stderr)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "consume":
        warm = int(sys.argv[5])
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), build=False, warm=warm)
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), build=True, warm=warm)
    elif cmd == "clean":
        clean(sys.argv[2])
    else:
        sys.exit(__doc__)
