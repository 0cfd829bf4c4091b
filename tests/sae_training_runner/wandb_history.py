"""Read the history rows of an offline wandb run from its `run-<id>.wandb` file.

The file is a 7-byte header (":W&B", 2 key bytes, a version byte) followed by records in
LevelDB's log format: 32 KiB blocks, each record chunk a 7-byte header (crc32, little-endian
length, type: 1 full, 2 first, 3 middle, 4 last) then its bytes; each record is a
serialised `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7


def _records(data: bytes) -> list[bytes]:
    records, pending = [], b""
    offset = FILE_HEADER
    while offset + CHUNK_HEADER <= len(data):
        room = BLOCK - offset % BLOCK
        if room < CHUNK_HEADER:  # block trailer padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + CHUNK_HEADER])
        chunk = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        if kind == 0:  # zero padding
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    return records


def offline_history(wandb_dir: Path) -> list[dict[str, Any]]:
    """History rows ({"_step": n, key: value}) of the single offline run under `wandb_dir`."""
    from wandb.proto import wandb_internal_pb2

    (run_file,) = Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb")
    rows = []
    for raw in _records(run_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows
