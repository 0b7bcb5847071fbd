"""The pandas peer of scripts/bench/reprocess: RAW_DIR's Parquet objects (a raw version checked
out by `driftwood data checkout`) read batch by batch with pyarrow, the default cleaning steps
in pandas `.str` (data_path_peers.clean_pandas), dedupe by cleaned text, written to OUT as
Parquet. Prints one JSON line: rows and MB of raw text read. Usage: reprocess_peer.py RAW_DIR OUT
"""

import glob
import json
import os
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(__file__))
from data_path_peers import clean_pandas  # noqa: E402


def main(raw_dir, out):
    seen, rows, nbytes, writer, kept_rows = set(), 0, 0, None, 0
    for path in sorted(glob.glob(os.path.join(raw_dir, "*.parquet"))):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
            frame = batch.to_pandas()
            rows += len(frame)
            nbytes += pc.sum(pc.binary_length(batch.column("text"))).as_py()
            cleaned = clean_pandas(list(frame["text"]))
            kept = frame.loc[cleaned.index].assign(text=cleaned.values)
            kept = kept[~kept["text"].isin(seen)].drop_duplicates("text")
            seen.update(kept["text"])
            kept_rows += len(kept)
            table = pa.Table.from_pandas(kept, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema, compression="zstd")
            writer.write_table(table.cast(writer.schema))
    if writer is not None:
        writer.close()
    print(json.dumps({"what": "pandas .str, batch by batch", "rows": rows, "kept": kept_rows, "mb": nbytes / 1e6}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
