"""`fingerprint_id_arrays`: the input fingerprint of a run's ID arrays, hashed from their
buffers, must be the one `fingerprint_ids` gives the same IDs (a resume compares them)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.ids.idset import IdRuns
from pipeline.output.manifest import fingerprint_id_arrays, fingerprint_ids


def test_fingerprint_id_arrays_is_fingerprint_ids_of_the_same_ids() -> None:
    values = list(range(1, 200_000, 3))
    whole = pa.array(values, pa.int64())
    # Slices start inside a buffer (offset > 0): only their own IDs are hashed.
    sliced = [whole.slice(start, 65_536) for start in range(0, len(whole), 65_536)]
    for chunk_size in (None, 10_000):
        want = fingerprint_ids(values, chunk_size=chunk_size)
        assert fingerprint_id_arrays([whole], chunk_size=chunk_size) == want
        assert fingerprint_id_arrays(sliced, chunk_size=chunk_size) == want
    runs = IdRuns([(5, 70_000), (80_000, 80_010)])
    in_runs = [runs.slice(start, 65_536) for start in range(0, len(runs), 65_536)]
    assert fingerprint_id_arrays(in_runs) == fingerprint_ids(runs.to_pylist())
    assert fingerprint_id_arrays([]) == fingerprint_ids([])
    assert fingerprint_id_arrays([pa.array([], pa.int64())]) == fingerprint_ids([])
    with pytest.raises(ValueError, match="int64"):
        fingerprint_id_arrays([pa.array([1, None], pa.int64())])
    with pytest.raises(ValueError, match="int64"):
        fingerprint_id_arrays([pa.array([1], pa.int32())])
