"""Python side of scripts/bench/flight: the same table served by a pyarrow.flight server, and
both servers read by PyPI clients.

usage: flight_peers.py DRIFTWOOD_PORT DRIFTWOOD_CACHED_PORT PEER_PORT PARQUET...
Prints one JSON line per measurement (same fields as the Rust side)."""

import json
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
import pyarrow.parquet as pq

RUNS = 4  # the best is printed (the first run warms caches)
driftwood_port, cached_port, peer_port = (int(a) for a in sys.argv[1:4])
paths = sys.argv[4:]
DRIFTWOOD = [(driftwood_port, "from Parquet"), (cached_port, "version cached")]
table = pq.read_table(paths[0]) if len(paths) == 1 else __import__("pyarrow").concat_tables(
    [pq.read_table(p) for p in paths])


class TableServer(flight.FlightServerBase):
    """The usual Python way to serve a table over Flight: DoGet streams it as record batches."""

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(table)


server = TableServer(f"grpc://127.0.0.1:{peer_port}")
threading.Thread(target=server.serve, daemon=True).start()
time.sleep(0.5)


def report(what, t, secs):
    print(json.dumps({"what": what, "rows": t.num_rows, "bytes": t.nbytes, "secs": secs,
                      "mb_per_s": t.nbytes / 1e6 / secs, "rows_per_s": t.num_rows / secs}), flush=True)


client = flight.FlightClient(f"grpc://127.0.0.1:{peer_port}")
for _ in range(RUNS):
    started = time.perf_counter()
    t = client.do_get(flight.Ticket(b"table")).read_all()
    report("pyarrow.flight server DoGet (pyarrow client)", t, time.perf_counter() - started)

del client

# The same pyarrow client against driftwood: GetFlightInfo of a Flight SQL statement (a
# CommandStatementQuery packed in an Any, written out by hand: pyarrow has no Flight SQL
# bindings), then DoGet of its ticket. Both are timed.
def field(number, payload):
    """A length-delimited protobuf field."""
    n, varint = len(payload), bytearray()
    while True:
        varint.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            break
    return bytes([number << 3 | 2]) + bytes(varint) + payload


statement = field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + field(
    2, field(1, b"SELECT * FROM latest"))
for port, how in DRIFTWOOD:
    client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
    for _ in range(RUNS):
        started = time.perf_counter()
        info = client.get_flight_info(flight.FlightDescriptor.for_command(statement))
        t = client.do_get(info.endpoints[0].ticket).read_all()
        report(f"driftwood DoGet, {how} (pyarrow client)", t, time.perf_counter() - started)
    del client

# One connection, like the pyarrow client above: the query (plan + DoGet) is timed, not the
# connection set-up.
for port, how in DRIFTWOOD:
    with flightsql.connect(f"grpc://127.0.0.1:{port}") as conn, conn.cursor() as cur:
        for _ in range(RUNS):
            started = time.perf_counter()
            cur.execute("SELECT * FROM latest")
            t = cur.fetch_arrow_table()
            report(f"driftwood DoGet, {how} (ADBC client)", t, time.perf_counter() - started)

for _ in range(RUNS):
    started = time.perf_counter()
    t = pq.read_table(paths[0])
    report("pyarrow.parquet read in-process (no Flight)", t, time.perf_counter() - started)
server.shutdown()
