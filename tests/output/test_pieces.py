"""Pieces: part of a chunk committed before it is complete, each ID in exactly one unit."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output import OutputRoot


def _open(root: Path, behavior: str = "error") -> OutputRoot:
    config = OutputConfig(root=str(root), existing_data_behavior=behavior)  # type: ignore[arg-type]
    return OutputRoot.open(config, "run-1", lock_settle_s=0)


def test_pieces_survive_a_reopen_and_the_chunk_takes_the_rest(
    tmp_path: Path, synth: ModuleType
) -> None:
    ids = synth.chunk_ids(0)
    first, rest = ids[:50], ids[50:]
    with _open(tmp_path) as out:
        out.write_piece(0, synth.deals(first), tuple(first))
        assert out.committed_pieces() == {0: frozenset(first)}
        assert out.committed_chunks() == set()
    # A new session (the first one died): the piece is still committed, the chunk is not.
    with _open(tmp_path, "resume") as out:
        assert out.committed_pieces() == {0: frozenset(first)}
        assert out.committed_chunks() == set()
        out.write_chunk(0, synth.deals(rest))
        manifest = out.finalize()
    assert manifest["counts"]["exported"] == len(ids)
    stored = json.loads((tmp_path / "_checkpoints" / "chunk-000000-p000.json").read_text())
    assert (stored["kind"], stored["chunk"], stored["ids"]) == ("piece", 0, first)


def test_an_id_already_in_a_piece_is_refused_in_the_chunk(
    tmp_path: Path, synth: ModuleType
) -> None:
    ids = synth.chunk_ids(0)
    with _open(tmp_path) as out:
        out.write_piece(0, synth.deals(ids[:10]), tuple(ids[:10]))
        with pytest.raises(OutputError, match="already committed in a piece"):
            out.write_chunk(0, synth.deals(ids[5:]))
        with pytest.raises(OutputError, match="already committed in a piece"):
            out.write_piece(0, synth.deals(ids[9:12]), tuple(ids[9:12]))
        out.write_piece(0, synth.deals(ids[10:12]), tuple(ids[10:12]))
        assert out.committed_pieces() == {0: frozenset(ids[:12])}
        assert (tmp_path / "_checkpoints" / "chunk-000000-p001.json").exists()


def test_a_piece_must_list_exactly_what_it_holds(tmp_path: Path, synth: ModuleType) -> None:
    ids = synth.chunk_ids(0)
    with _open(tmp_path) as out:
        with pytest.raises(OutputError, match="lists 11 IDs but holds 10"):
            out.write_piece(0, synth.deals(ids[:10]), tuple(ids[:11]))
        out.write_chunk(0, synth.deals(ids))
        with pytest.raises(OutputError, match="already committed"):
            out.write_piece(0, synth.deals(ids[:1]), tuple(ids[:1]))
