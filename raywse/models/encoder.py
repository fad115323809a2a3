"""Permutation-equivariant GNN encoder of neural graphs (graph fields: :mod:`raywse.graph.schema`).

Pipeline: sign canonicalisation of odd-activation neurons and ReLU-scale canonicalisation of the weights and probe
responses → per-(graph, layer) RMS normalisation → node / edge initialisation (Fourier-lifted scalars, the node's
probe responses, learned embeddings) → ``depth`` bidirectional :class:`NeuralGraphConv` layers, run per weight
tensor as dense blocks on the CPU (:mod:`raywse.models.blocks`; on a GPU, or with ``dense_blocks=False``, the PyG
edge-list form, which computes the same) → readout
(:func:`invariant_readout` of the hidden layers, plus the output neurons *in class order*: their states and their
softmax responses on the probes) → MLP → learned embedding, concatenated with the *response fingerprint* (the
class-order softmax responses through a fixed random projection drawn per probe set, so responses to different probe
sets are orthogonal; a network never run on probes gets its first-layer moments, :mod:`raywse.graph.lineage`, in
dimensions of its own instead), then, lightly weighted, how confidently the network answers its probes
(:func:`~raywse.models.pooling.confidence_statistics`, which the accuracy head reads too) → L2-normalised embedding
(:attr:`NeuralGraphEncoder.parts`; last, the lineage part: zero in a task query, the network's first-layer sketch and
a code of its layer structure in what an index stores and in a lineage query: :meth:`~NeuralGraphEncoder.database_form`,
:meth:`~NeuralGraphEncoder.kinship_form`).
The learned part is trained on the similarity of the whole embedding: it learns what the fingerprint alone gets
wrong.

Invariance: nothing reads the order or index of hidden nodes (probe responses move with their neurons). Hidden nodes are
only distinguished by their features (bias, layer, activation, type) and their edges, and every reduction is a scatter
over (graph, layer) groups, so the embedding is invariant to permuting hidden neurons up to float summation order (~1e-7
relative).

Positions: input and output nodes carry their ``node_pos``; positions ``>= max_input_pos`` / ``max_output_pos`` are
taken modulo the table size (they share an embedding with a lower position). Layer indices are clipped to
``num_layers_max``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from raywse.core.spec import ACTIVATIONS, SpecError
from raywse.graph.kernels import kernel_cells, kernel_shape_of, pad_edge_features
from raywse.graph.lineage import first_layer_moments, first_layer_sketch
from raywse.graph.probes import NO_PROBES, NUM_PROBES, probe_rows
from raywse.graph.schema import NodeKind, NodeType
from raywse.graph.structure import structure_codes
from raywse.graph.symmetry import canonicalize_scale, canonicalize_sign, odd_nodes, scalable_nodes
from raywse.models.blocks import block_layout, edge_grids, grid_sums
from raywse.models.conv import NeuralGraphConv
from raywse.models.features import fourier_lift, layer_keys, layer_rms, mlp, sparse_lifted_linear
from raywse.models.pooling import CONFIDENCE_STATS, class_order_readout, confidence_statistics, invariant_readout

#: Edges above which a batch's edge states are computed a block-group chunk at a time, straight into the grids
#: (:func:`~raywse.models.blocks.edge_grids`), never all at once.
EDGE_CHUNK = 1 << 20


@dataclass
class EncoderConfig:
    """Hyper-parameters of :class:`NeuralGraphEncoder`; the defaults are the laptop training defaults."""

    depth: int = 2
    hidden: int = 32
    edge_hidden: int = 8
    embed_dim: int = 64
    max_input_pos: int = 1024
    max_output_pos: int = 64
    num_layers_max: int = 16
    edge_dim: int = 9  # kernel area; must be a perfect square (kernels are centred-padded to sqrt x sqrt)
    fourier_features: int = 4
    fourier_scale: float = 1.0
    dropout: float = 0.0
    canonicalize_scale: bool = True  # remove the sign (odd activations) and scale symmetries exactly
    num_probes: int = NUM_PROBES  # width of every graph's probe_act
    readout_classes: int = 10  # output neurons read in class order (more are dropped, fewer padded)
    fingerprint_dim: int = 256  # width of the response fingerprint (0: learned embedding only)
    fingerprint_weight: float = 0.8  # its share of the squared norm of the embedding
    # a network never run on probes (e.g. a foreign file of unknown activation, inference off) has no responses: its
    # fingerprint is then its first-layer moments (raywse.graph.lineage), this wide, in dimensions of its own (0: none)
    sketch_dim: int = 256
    # share of the squared norm for how confidently the network answers its probes (pooling.confidence_statistics,
    # last in the embedding; 0: left out); the accuracy head reads these statistics either way
    confidence_weight: float = 0.02
    # the lineage part, last: zero in a task query; in what an index stores and in a lineage query, the network's
    # first-layer sketch (raywse.graph.lineage), kinship_dim wide (0: no lineage search), then its structure's code
    # (raywse.graph.structure: relatives share the layer structure), structure_dim wide, with this share of the
    # part's squared norm
    kinship_dim: int = 1024
    structure_dim: int = 128
    kinship_structure_weight: float = 0.2
    # message passing by weight-tensor blocks on the CPU, where they are faster; on a GPU the PyG edge-list form is
    # 1.7-2.4x faster (bench/README.md) and runs instead (the same embeddings) unless a batch has more than
    # EDGE_CHUNK edges (the blocks never hold every edge's state at once); False: the edge-list form everywhere
    dense_blocks: bool = True
    accuracy_head: bool = True
    # True only in the deliberately non-equivariant baseline (raywse.models.baselines.nonequivariant), which also
    # embeds each hidden node's index within its layer; raywse.models.checkpoint.build_encoder picks the class by it
    reads_node_order: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        side = math.isqrt(self.edge_dim)
        if side * side != self.edge_dim:
            raise ValueError(f"edge_dim must be a perfect square (kernel area), got {self.edge_dim}")
        if not 0 <= self.confidence_weight < 1:
            raise ValueError(f"confidence_weight must be in [0, 1), got {self.confidence_weight}")
        if not 0 <= self.kinship_structure_weight <= 1:
            raise ValueError(f"kinship_structure_weight must be in [0, 1], got {self.kinship_structure_weight}")


class NeuralGraphEncoder(nn.Module):
    """Embed neural graphs into L2-normalised ``[B, embed_dim]`` vectors, invariant to hidden-neuron permutations."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or EncoderConfig()
        gen = torch.Generator().manual_seed(cfg.seed)
        self.register_buffer("freqs", torch.randn(cfg.fourier_features, generator=gen) * cfg.fourier_scale)
        lifted = 2 * cfg.fourier_features + 1
        h = cfg.hidden
        self.bias_in = nn.Linear(lifted, h)
        self.scale_in = nn.Linear(lifted, h)  # log RMS of the node's layer (scale information removed by normalising)
        self.layer_emb = nn.Embedding(cfg.num_layers_max + 1, h)
        self.layer_from_out_emb = nn.Embedding(cfg.num_layers_max + 1, h)
        self.kind_emb = nn.Embedding(len(NodeKind), h)
        self.in_pos_emb = nn.Embedding(cfg.max_input_pos, h)
        self.out_pos_emb = nn.Embedding(cfg.max_output_pos, h)
        self.act_emb = nn.Embedding(len(ACTIVATIONS), h)
        self.slope_in = nn.Linear(lifted, h)  # the activation's slope below zero (a PReLU's learned one)
        self.type_emb = nn.Embedding(len(NodeType), h)
        self.probe_in = nn.Linear(cfg.num_probes, h)  # the node's (normalised) responses on the probes
        self.probed_emb = nn.Embedding(2, h)  # whether the graph's network was run on probes at all
        self.node_norm = nn.LayerNorm(h)
        self.edge_in = mlp([cfg.edge_dim * lifted, cfg.edge_hidden, cfg.edge_hidden])
        self.edge_norm = nn.LayerNorm(cfg.edge_hidden)
        self.convs = nn.ModuleList(NeuralGraphConv(h, cfg.edge_hidden, cfg.dropout) for _ in range(cfg.depth))
        classes = cfg.readout_classes
        self.readout = mlp([4 * h + cfg.edge_hidden + classes * (h + cfg.num_probes), 2 * h, 2 * h], cfg.dropout)
        self.project = nn.Linear(2 * h, cfg.embed_dim)
        self.accuracy = mlp([2 * h + CONFIDENCE_STATS, h, 1]) if cfg.accuracy_head else None
        self._projections: dict[tuple, Tensor] = {}

    def prepare(self, data: Data) -> Data:
        """Pad one graph's kernels to the encoder's ``edge_dim`` (call before batching graphs of different kernel
        shapes); a :class:`~raywse.core.spec.SpecError` for kernels larger than the encoder takes."""
        side = math.isqrt(self.config.edge_dim)
        return pad_edge_features(data, (side, side))

    def _as_batch(self, batch: Data) -> Batch:
        """``batch`` collated; its kernels are read where they sit in the centre-padded grid (:meth:`kernel_slots`),
        never padded here: a graph of tens of millions of 1×1 edges would carry nine times the memory."""
        return batch if isinstance(batch, Batch) else Batch.from_data_list([batch])

    def kernel_slots(self, kernel_shape: tuple[int, int], model_id: str = "?") -> Tensor:
        """Position of each column of a graph's ``edge_attr`` (``kernel_shape`` kernels) in the encoder's
        ``side × side`` kernel grid, centre-padded; a :class:`~raywse.core.spec.SpecError` for larger kernels."""
        side = math.isqrt(self.config.edge_dim)
        try:
            return kernel_cells(kernel_shape, (side, side))
        except SpecError as exc:
            raise SpecError(f"graph {model_id}: {exc} (the encoder takes at most {side}x{side})") from exc

    def _batch_slots(self, batch: Batch) -> Tensor:
        return self.kernel_slots(kernel_shape_of(batch)).to(batch.edge_attr.device)

    def node_features(
        self, batch: Batch, bias: Tensor, log_scale: Tensor, num_layers: Tensor, probes: Tensor, probed: Tensor
    ) -> Tensor:
        """Initial node states; never reads hidden node order (subclasses may, deliberately)."""
        cfg = self.config
        kind, pos = batch.node_kind, batch.node_pos
        from_out = (num_layers[batch.batch] - batch.node_layer).clamp(0, cfg.num_layers_max)
        zero = torch.zeros_like(pos)
        is_in, is_out = kind == NodeKind.INPUT, kind == NodeKind.OUTPUT
        in_pos = self.in_pos_emb(torch.where(is_in, pos.clamp(min=0) % cfg.max_input_pos, zero))
        out_pos = self.out_pos_emb(torch.where(is_out, pos.clamp(min=0) % cfg.max_output_pos, zero))
        h = (
            self.bias_in(fourier_lift(bias, self.freqs))
            + self.scale_in(fourier_lift(log_scale, self.freqs))
            + self.layer_emb(batch.node_layer.clamp(0, cfg.num_layers_max))
            + self.layer_from_out_emb(from_out)
            + self.kind_emb(kind)
            + in_pos * is_in.unsqueeze(-1)
            + out_pos * is_out.unsqueeze(-1)
            + self.act_emb(batch.node_act)
            + self.slope_in(fourier_lift(batch.act_slope.float(), self.freqs))
            + self.type_emb(batch.node_type)
            + self.probe_in(probes)
            + self.probed_emb(probed[batch.batch].long())
        )
        return self.node_norm(h)

    def edge_features(self, edge_attr: Tensor, slots: Tensor) -> Tensor:
        """Initial edge states ``[E, edge_hidden]`` of normalised kernels ``edge_attr [E, k]`` (columns at ``slots``
        of the kernel grid)."""
        return self.edge_norm(self.edge_in[1:](sparse_lifted_linear(edge_attr, self.freqs, self.edge_in[0], slots)))

    def representation(self, batch: Data) -> tuple[Tensor, Tensor]:
        """Pre-normalisation graph representation ``[B, 2 * hidden]`` and the class-order softmax responses
        ``[B, num_probes * readout_classes]`` (zeros for graphs without probes)."""
        batch = self._as_batch(batch)
        cfg = self.config
        num_graphs = int(batch.num_graphs)
        bias, edge_attr, edge_index = batch.x.view(-1).float(), batch.edge_attr.float(), batch.edge_index
        probes = batch.probe_act.float()
        if probes.shape[1] != cfg.num_probes:
            raise SpecError(f"graphs carry {probes.shape[1]} probe responses, the encoder takes {cfg.num_probes}")
        if cfg.canonicalize_scale:
            odd = odd_nodes(batch)
            edge_attr, bias, probes = canonicalize_sign(edge_index, edge_attr, bias, probes, odd)
            scalable = scalable_nodes(batch)
            edge_attr, bias, factor = canonicalize_scale(edge_index, edge_attr, bias, batch.node_layer, scalable)
            probes = probes / factor.unsqueeze(-1)

        max_layer = int(batch.node_layer.max())
        num_keys = num_graphs * (max_layer + 1)
        node_key = layer_keys(batch.batch, batch.node_layer, max_layer)
        edge_key = node_key[edge_index[1]]
        rms = layer_rms(edge_attr, edge_key, num_keys)
        edge_attr = edge_attr / rms[edge_key].unsqueeze(-1)
        del edge_key
        bias = bias / rms[node_key]
        num_layers = scatter(batch.node_layer, batch.batch, dim=0, dim_size=num_graphs, reduce="max")
        probed = ~unprobed_mask(batch, probes.device)
        outputs = probes  # output neurons are never flipped or rescaled: these are the logits
        probes = probes / layer_rms(probes, node_key, num_keys)[node_key].unsqueeze(-1)

        h = self.node_features(batch, bias, rms.log()[node_key], num_layers, probes, probed)
        slots = self._batch_slots(batch)
        degree = sum(torch.bincount(ends, minlength=h.shape[0]) for ends in edge_index)
        inv_sqrt_deg = degree.to(h.dtype).clamp(min=1).rsqrt().unsqueeze(-1)
        edges_per_graph = torch.bincount(batch.batch[edge_index[1]], minlength=num_graphs).clamp(min=1)
        if cfg.dense_blocks and (h.device.type == "cpu" or len(edge_attr) > EDGE_CHUNK):  # a large graph by chunks
            groups = block_layout(edge_index, node_key, num_keys)
            if len(edge_attr) <= EDGE_CHUNK:
                every = self.edge_features(edge_attr, slots)
                states = every.__getitem__
            else:
                states = lambda edges: self.edge_features(edge_attr[edges], slots)  # noqa: E731
            grids = edge_grids(groups, states, cfg.edge_hidden)
            edge_sums, blocks, e = (
                grid_sums(groups, grids, batch.batch, num_graphs, cfg.edge_hidden),
                (groups, grids),
                None,
            )
        else:
            e, blocks = self.edge_features(edge_attr, slots), None
            edge_sums = scatter(e, batch.batch[edge_index[1]], dim=0, dim_size=num_graphs, reduce="sum")
        edge_mean = edge_sums / edges_per_graph.unsqueeze(-1).to(edge_sums.dtype)
        for conv in self.convs:
            h = conv(h, edge_index, e, inv_sqrt_deg, blocks)
        pooled = invariant_readout(batch, h, edge_mean, node_key, num_keys)
        states, responses = class_order_readout(batch, h, outputs, probed, cfg.readout_classes)
        rep = self.readout(torch.cat([pooled, states, responses], dim=-1))
        return rep, responses

    @property
    def parts(self) -> dict[str, slice]:
        """Where each part of an embedding lies, in order: ``learned``, the fingerprint's ``responses`` and
        ``sketch`` (the unprobed's), ``confidence`` and ``kinship`` (the lineage part; a part the config leaves out is
        an empty slice)."""
        cfg = self.config
        fingerprint = cfg.fingerprint_dim > 0
        widths = {
            "learned": cfg.embed_dim,
            "responses": cfg.fingerprint_dim,
            "sketch": cfg.sketch_dim if fingerprint else 0,
            "confidence": CONFIDENCE_STATS if cfg.confidence_weight > 0 else 0,
            "kinship": cfg.kinship_dim + cfg.structure_dim if cfg.kinship_dim > 0 else 0,
        }
        out, start = {}, 0
        for name, width in widths.items():
            out[name] = slice(start, start + width)
            start += width
        return out

    @property
    def answers_lineage(self) -> bool:
        """Whether stored embeddings carry the lineage part (so the encoder answers lineage queries)."""
        return self.config.kinship_dim > 0

    @property
    def output_dim(self) -> int:
        """Width of the embeddings (:attr:`parts`)."""
        return self.parts["kinship"].stop

    def fingerprint(self, responses: Tensor, sources: list[str]) -> Tensor:
        """``[B, fingerprint_dim]``: each graph's responses (normalised) through the fixed projection of its probe
        rows (seeded by :func:`~raywse.graph.probes.probe_rows` of its source), so fingerprints of different probe
        sets are near orthogonal."""
        cfg = self.config
        out = torch.zeros(len(sources), cfg.fingerprint_dim, dtype=responses.dtype, device=responses.device)
        unit = F.normalize(responses, dim=-1)
        for source in set(sources):
            rows = torch.tensor([i for i, s in enumerate(sources) if s == source], device=responses.device)
            out[rows] = unit[rows] @ self._projection(source, responses)
        return F.normalize(out, dim=-1)

    def _projection(self, source: str, like: Tensor) -> Tensor:
        """The fixed ``[responses, fingerprint_dim]`` projection of one probe set (cached; not a parameter)."""
        key = (source, like.shape[1], like.device, like.dtype)
        if key not in self._projections:
            dim = self.config.fingerprint_dim
            gen = torch.Generator().manual_seed(zlib.crc32(probe_rows(source).encode()))
            proj = torch.randn(like.shape[1], dim, generator=gen) / math.sqrt(dim)
            self._projections[key] = proj.to(like.device, like.dtype)
        return self._projections[key]

    def _embed(self, batch: Data) -> tuple[Tensor, Tensor]:
        """``(embeddings, what the accuracy head reads: the representation and the confidence statistics)``."""
        batch = self._as_batch(batch)
        rep, responses = self.representation(batch)
        confidence = confidence_statistics(responses, self.config.readout_classes)
        z = F.normalize(self.project(rep), dim=-1)
        if self.config.fingerprint_dim > 0:
            w = self.config.fingerprint_weight
            fp = self.fingerprint(responses, _as_list(batch.probe_source))  # zeros for a network never run on probes
            if self.config.sketch_dim > 0:  # ... which has its first-layer moments instead, in dimensions of its own
                unprobed = unprobed_mask(batch, fp.device)
                sketch = fp.new_zeros(len(unprobed), self.config.sketch_dim)
                if bool(unprobed.any()):
                    sketch = first_layer_moments(batch, self.config.sketch_dim, self.config.seed, unprobed).to(fp.dtype)
                fp = torch.cat([fp, sketch], dim=-1)
            z = F.normalize(torch.cat([math.sqrt(1 - w) * z, math.sqrt(w) * fp], dim=-1), dim=-1)
        c = self.config.confidence_weight
        if c > 0:  # each statistic lies in [0, 1]: this part's squared norm is at most c
            part = confidence / math.sqrt(CONFIDENCE_STATS)
            z = F.normalize(torch.cat([math.sqrt(1 - c) * z, math.sqrt(c) * part], dim=-1), dim=-1)
        z = F.pad(z, (0, self.parts["kinship"].stop - z.shape[1]))  # the lineage part: zero in a task query
        return z, torch.cat([rep, confidence], dim=-1)

    def forward(self, batch: Data) -> Tensor:
        """L2-normalised embeddings ``[B, output_dim]`` (the query form; :meth:`database_form` for an index)."""
        return self._embed(batch)[0]

    def database_form(self, batch: Data, z: Tensor, kinship: Tensor | None = None) -> Tensor:
        """The embeddings ``z`` of ``batch`` as an index stores them: a probed network's also carry its first-layer
        moments, weighted as an unprobed network's are, in the sketch's dimensions, and every network's lineage part
        is its lineage query's (so a probed network with a first layer has norm
        ``sqrt(2 + fingerprint_weight)``).

        A query never run on probes has only its learned part and its moments, so it meets every indexed network on
        those; a probed query's sketch dimensions are zero, so its scores are unchanged; a task query's lineage part
        is zero, a lineage query's (:meth:`kinship_form`) all it has. Either way a score is the cosine of the parts
        the query has (1 for a network found by itself). ``kinship``: the batch's :meth:`kinship_form`, where
        already computed.
        """
        cfg = self.config
        batch = self._as_batch(batch)
        probed = ~unprobed_mask(batch, z.device)
        stored = z.clone()
        if cfg.fingerprint_dim > 0 and cfg.sketch_dim > 0 and bool(probed.any()):
            moments = first_layer_moments(batch, cfg.sketch_dim, cfg.seed, probed).to(z.dtype)
            stored[:, self.parts["sketch"]] += math.sqrt(cfg.fingerprint_weight) * moments
        if self.answers_lineage:
            lineage = self.parts["kinship"]
            stored[:, lineage] = (self.kinship_form(batch) if kinship is None else kinship)[:, lineage].to(z.dtype)
        return stored

    def kinship_form(self, batch: Data) -> Tensor:
        """``[B, output_dim]`` lineage queries: each graph's first-layer sketch and structure code alone, in the
        lineage part (zeros elsewhere; ``kinship_structure_weight``). Against the :meth:`database_form` it scores an
        indexed network by how much of the query's initialisation it shares (:mod:`raywse.graph.lineage`: its parent,
        siblings and fine-tuned children first) and whether it has the query's layer structure, whatever either
        network does. :class:`ValueError` for an encoder without a
        lineage part."""
        cfg = self.config
        if not self.answers_lineage:
            raise ValueError("this encoder has no lineage part (kinship_dim is 0): it cannot search by lineage")
        batch = self._as_batch(batch)
        out = batch.edge_attr.new_zeros(int(batch.num_graphs), self.output_dim, dtype=torch.float32)
        a = cfg.kinship_structure_weight
        sketch = first_layer_sketch(batch, cfg.kinship_dim, cfg.seed)
        code = structure_codes(batch, cfg.structure_dim, cfg.seed).to(sketch.device)
        out[:, self.parts["kinship"]] = torch.cat([math.sqrt(1 - a) * sketch, math.sqrt(a) * code], dim=1)
        return out

    def embed_and_predict(self, batch: Data) -> tuple[Tensor, Tensor]:
        """Embeddings and predicted accuracy in [0, 1] from one forward pass."""
        if self.accuracy is None:
            raise RuntimeError("encoder was built with accuracy_head=False")
        z, head_input = self._embed(batch)
        return z, torch.sigmoid(self.accuracy(head_input)).squeeze(-1)

    def predict_accuracy(self, batch: Data) -> Tensor:
        """Predicted test accuracy in [0, 1], ``[B]`` (needs ``accuracy_head=True``)."""
        return self.embed_and_predict(batch)[1]


def unprobed_mask(batch: Batch, device: torch.device | str) -> Tensor:
    """``[B]`` bool: which graphs' networks were never run on probes (``probe_source`` ``none``)."""
    return torch.tensor([src == NO_PROBES for src in _as_list(batch.probe_source)], device=device)


def _as_list(value) -> list:
    """A collated per-graph string attribute as a list (one graph's value is a plain string)."""
    return [value] if isinstance(value, str) else list(value)
