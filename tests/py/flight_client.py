"""Queries Driftwood's Flight SQL server with clients nobody here wrote: the ADBC Flight SQL
driver (adbc-driver-flightsql, Go) through its DB-API, and pyarrow.flight. Prints one JSON
object of results for the Rust test to check.

usage: flight_client.py URI USER PASSWORD NOROLE_USER NOROLE_PASSWORD ROOT_CERT
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
from adbc_driver_flightsql import DatabaseOptions

uri, user, password, norole_user, norole_password, root_cert = sys.argv[1:7]
with open(root_cert, encoding="utf-8") as f:
    root_pem = f.read()


def connect(username=None, pw=None):
    kwargs = {DatabaseOptions.TLS_ROOT_CERTS.value: root_pem}
    if username is not None:
        kwargs["username"] = username
        kwargs["password"] = pw
    return flightsql.connect(uri, db_kwargs=kwargs)


def rows(cur, sql, params=None):
    cur.execute(sql, params) if params is not None else cur.execute(sql)
    return [list(r) for r in cur.fetchall()]


def refusal(fn):
    try:
        fn()
    except Exception as e:  # the driver's error types differ by version; keep the message
        return f"{type(e).__name__}: {e}"
    return None


out = {}
with connect(user, password) as conn:
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    out["tables"] = sorted(
        f"{s['db_schema_name']}.{t['table_name']}"
        for c in objects
        for s in c["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
    )
    out["catalogs"] = sorted(c["catalog_name"] for c in objects)
    schema = conn.adbc_get_table_schema("latest", db_schema_filter="text")
    out["latest_schema"] = [[f.name, str(f.type), f.nullable] for f in schema]
    info = conn.adbc_get_info()
    out["vendor"] = info.get("vendor_name")
    with conn.cursor() as cur:
        out["count_v1"] = rows(cur, "SELECT count(*) FROM text.v1")[0][0]
        out["count_v2"] = rows(cur, "SELECT count(*) FROM text.v2")[0][0]
        out["count_tag"] = rows(cur, "SELECT count(*) FROM text.baseline")[0][0]
        out["long_by_label"] = rows(
            cur,
            "SELECT label, count(*) AS n FROM text.latest WHERE length(text) > 200 "
            "GROUP BY label ORDER BY label",
        )
        out["added_v1_to_v2"] = rows(
            cur,
            "SELECT count(*) FROM text.v2 b LEFT JOIN text.v1 a ON a.id = b.id WHERE a.id IS NULL",
        )[0][0]
        out["versions"] = rows(cur, "SELECT seq, rows, rows_added, tags FROM text.versions ORDER BY seq")
        # A prepared statement with a bound parameter (qmark style), executed twice.
        out["spam_count"] = rows(cur, "SELECT count(*) FROM text.latest WHERE label = ?", ("spam",))[0][0]
        out["ham_count"] = rows(cur, "SELECT count(*) FROM text.latest WHERE label = ?", ("ham",))[0][0]
        # Which model version scored each text of data version 1, and what the text was.
        out["scored_join"] = rows(
            cur,
            "SELECT s.model, s.model_version, count(*) AS n, "
            "sum(CASE WHEN s.label = t.label THEN 1 ELSE 0 END) AS correct "
            "FROM scored.latest s JOIN text.v1 t ON s.id = t.id "
            "WHERE s.status = 'scored' GROUP BY s.model, s.model_version",
        )
        cur.execute("SELECT id, text FROM text.latest")
        table = cur.fetch_arrow_table()
        out["streamed_rows"] = table.num_rows
        out["streamed_schema"] = [[f.name, str(f.type), f.nullable] for f in table.schema]
        out["bad_sql"] = refusal(lambda: rows(cur, "SELECT * FROM text.no_such_version"))

out["wrong_password"] = refusal(lambda: connect(user, password + "x").cursor().execute("SELECT 1"))
out["no_role"] = refusal(lambda: rows(connect(norole_user, norole_password).cursor(), "SELECT 1"))
out["anonymous"] = refusal(lambda: rows(connect().cursor(), "SELECT count(*) FROM text.latest"))

# pyarrow.flight: basic-auth handshake, bearer token, then the Flight SQL command by hand is
# not needed — a plain handshake proves the token is a JWT from the same issuer.
client = flight.FlightClient(uri, tls_root_certs=root_pem.encode())
token_pair = client.authenticate_basic_token(user, password)
out["handshake_header"] = token_pair[0].decode()
out["handshake_token_parts"] = len(token_pair[1].decode().removeprefix("Bearer ").split("."))

print(json.dumps(out, default=str))
