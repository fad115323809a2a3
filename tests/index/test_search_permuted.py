"""Searching with a hidden-permuted copy of a zoo checkpoint finds the original: the whole path (safetensors ->
graphify -> encoder -> FAISS) is invariant to the order of hidden neurons, even with an untrained encoder."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from test_embed_search import in_process_embed  # the EmbedActor without Ray Data (the Ray path is tested there)

import raywse.index.embed as embed_mod
from raywse.core.io import load_checkpoint, save_checkpoint
from raywse.core.spec import ArchSpec
from raywse.graph.symmetry import permute_hidden
from raywse.index.embed import build_index
from raywse.index.search import search_checkpoint
from raywse.models.checkpoint import export_encoder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder


@pytest.fixture(scope="module")
def indexed(tiny_zoo, tiny_graphs, tmp_path_factory):
    """An untrained small encoder and a flat index of every tiny-zoo graph; returns ``(encoder_dir, index_dir)``."""
    root = tmp_path_factory.mktemp("permuted_search")
    config = EncoderConfig(depth=1, hidden=16, embed_dim=16)
    export_encoder(NeuralGraphEncoder(config).state_dict(), config, root / "encoder")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embed_mod, "embed_graphs", in_process_embed)
        summary = build_index(tiny_graphs, root / "encoder", root / "index")
    assert summary["errors"] == {} and summary["count"] == pq.read_table(tiny_graphs / "manifest.parquet").num_rows
    return root / "encoder", root / "index"


@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet"])
def test_permuted_copy_finds_original(family, tiny_zoo, indexed, tmp_path):
    encoder_dir, index_dir = indexed
    rows = pq.read_table(tiny_zoo / "manifest.parquet").to_pylist()
    # not a fine-tuning parent or child: a child (30 steps from its parent) can sit ~1e-5 from it in cosine
    lineage = {r["parent_id"] for r in rows} | {r["model_id"] for r in rows if r["parent_id"]}
    record = next(r for r in rows if r["family"] == family and r["model_id"] not in lineage)
    original = tiny_zoo / record["path"]
    tensors, metadata = load_checkpoint(original)
    spec = ArchSpec.from_json(metadata["layer_spec"])
    permuted = permute_hidden(tensors, spec, torch.Generator().manual_seed(7))
    assert any(not torch.equal(permuted[k], tensors[k]) for k in tensors)  # really a different file
    copy = tmp_path / "renamed-copy.safetensors"  # a new name: the query's id is its file stem
    save_checkpoint(permuted, copy, metadata)
    assert load_checkpoint(copy)[1] == metadata

    for query in (copy, original):
        found = search_checkpoint(query, index_dir, encoder_dir, tiny_zoo, k=5)
        assert len(found) == 5
        top = found[0]
        assert top.model_id == record["model_id"], (query.name, [(n.model_id, n.score) for n in found])
        assert top.score >= 0.9999
        assert (top.task, top.family) == (record["task"], family)
