"""Publishes a corpus of bad (and a few good) records to a topic with confluent-kafka, the
Python client nobody on this project wrote. Prints, as JSON, what each key should become:
`snapshot` or the dead-letter reason code.

usage: publish_bad.py BROKERS TOPIC MAX_RECORD_BYTES
"""
import json
import sys

from confluent_kafka import Producer

brokers, topic, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})
expect = {}


def send(key, value, reason):
    p.produce(topic, key=key.encode(), value=value)
    expect[key] = reason


send("py-tombstone", None, "empty_value")
send("py-empty", b"", "empty_value")
send("py-lone-byte", b"caf\xff", "invalid_utf8")
send("py-truncated-utf8", b"caf\xc3", "invalid_utf8")
send("py-utf16", "hello".encode("utf-16"), "invalid_utf8")
send("py-latin1", "déjà vu".encode("latin-1"), "invalid_utf8")
send("py-too-large", b"x" * (max_bytes + 1), "too_large")
send("py-bad-json", b'{"text": "unterminated', "malformed_json")
send("py-json-trailing", b'{"text": "a"} trailing', "malformed_json")
send("py-array", b'["text", "in", "an", "array"]', "not_an_object")
send("py-number-text", b'{"id": "n1", "text": 42}', "text_not_string")
send("py-object-text", b'{"text": {"nested": true}}', "text_not_string")
send("py-no-text", b'{"id": "x", "label": "spam"}', "missing_text")
send("py-null-text", b'{"text": null}', "missing_text")
send("py-array-id", b'{"id": [1, 2], "text": "hello"}', "bad_field")
send("py-bad-ts", b'{"text": "hello", "ts": "yesterday"}', "bad_field")
send("py-string-meta", b'{"text": "hello", "meta": "m"}', "bad_field")
send("py-float-label", b'{"text": "hello", "label": 0.5}', "bad_field")
send("py-blank", b"   \n\t  ", "blank_text")
send("py-blank-json", b'{"text": "   "}', "blank_text")
send("py-only-html", b'{"text": "<div><br/></div>"}', "filtered")
send("py-only-control", "\u0000\u0007\u001b".encode(), "filtered")
# Good records, including awkward-but-valid ones.
send("py-good-plain", "Plain text from Python, with émojis 👍".encode(), "snapshot")
send("py-good-json", json.dumps({"text": "A JSON record", "label": "ham", "ts": 1700000000000}).encode(), "snapshot")
send("py-good-rtl", json.dumps({"text": "שלום עולם مرحبا", "meta": {"lang": "he"}}).encode(), "snapshot")
send("py-good-nul-inside", json.dumps({"text": "before\u0000after"}).encode(), "snapshot")
p.flush(30)
print(json.dumps(expect))
