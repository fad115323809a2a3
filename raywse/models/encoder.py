"""Permutation-equivariant GNN encoder of neural graphs (see docs/architecture.md, "Neural graph contract").

Pipeline: optional ReLU-scale canonicalisation of the weights → per-(graph, layer) RMS normalisation of weights and
biases → node / edge initialisation (Fourier-lifted scalars + learned embeddings) → ``depth`` bidirectional
:class:`NeuralGraphConv` layers → invariant pooling → MLP → L2-normalised embedding.

Invariance: nothing reads the order or index of hidden nodes. Hidden nodes are only distinguished by their features
(bias, layer, activation, type) and their edges, and every reduction is a scatter over (graph, layer) groups, so the
embedding is invariant to permuting hidden neurons up to float summation order (~1e-7 relative).

Positions: input and output nodes carry their ``node_pos``; positions ``>= max_input_pos`` / ``max_output_pos`` are
taken modulo the table size (they share an embedding with a lower position). Layer indices are clipped to
``num_layers_max``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from raywse.graph.neural_graph import center_pad_kernels
from raywse.spec import ACTIVATIONS, POSITIVELY_HOMOGENEOUS

#: ``node_act`` ids of activations that commute with positive per-neuron scaling.
HOMOGENEOUS_ACT_IDS = tuple(ACTIVATIONS.index(a) for a in POSITIVELY_HOMOGENEOUS)
NUM_NODE_KINDS = 3
NUM_NODE_TYPES = 3


@dataclass
class EncoderConfig:
    """Hyper-parameters of :class:`NeuralGraphEncoder` (JSON-serialisable via :meth:`to_dict`)."""

    depth: int = 4
    hidden: int = 256
    edge_hidden: int = 64
    embed_dim: int = 128
    max_input_pos: int = 1024
    max_output_pos: int = 64
    num_layers_max: int = 16
    edge_dim: int = 9  # kernel area; must be a perfect square (kernels are centred-padded to sqrt x sqrt)
    fourier_features: int = 16
    fourier_scale: float = 1.0
    dropout: float = 0.0
    canonicalize_scale: bool = True
    update_edges: bool = True
    accuracy_head: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        side = math.isqrt(self.edge_dim)
        if side * side != self.edge_dim:
            raise ValueError(f"edge_dim must be a perfect square (kernel area), got {self.edge_dim}")

    @property
    def kernel_side(self) -> int:
        return math.isqrt(self.edge_dim)

    def to_dict(self) -> dict:
        return asdict(self)


def pad_kernels(data: Data, edge_dim: int) -> Data:
    """Return ``data`` with ``edge_attr`` centred-padded from ``data.kernel_shape`` to a square of area ``edge_dim``.

    Needed before batching graphs with different kernel shapes (MLP 1x1 edges with CNN 3x3 edges). Raises
    :class:`ValueError` for kernels larger than the encoder supports.
    """
    shape = data.kernel_shape
    collated = isinstance(shape[0], (list, tuple))  # a Batch holds one (kh, kw) per graph
    if collated:
        if len({tuple(s) for s in shape}) != 1:
            raise ValueError("mixed kernel shapes in one batch: pad each graph with pad_kernels before batching")
        shape = shape[0]
    kh, kw = (int(v) for v in shape)
    side = math.isqrt(edge_dim)
    if data.edge_attr.shape[1] != kh * kw:
        raise ValueError(f"edge_attr width {data.edge_attr.shape[1]} does not match kernel_shape {(kh, kw)}")
    if (kh, kw) == (side, side):
        return data
    if kh > side or kw > side:
        raise ValueError(
            f"graph {getattr(data, 'model_id', '?')} has {kh}x{kw} kernels; the encoder supports at most "
            f"{side}x{side} (edge_dim={edge_dim}); raise EncoderConfig.edge_dim"
        )
    kern = center_pad_kernels(data.edge_attr.view(-1, kh, kw), (side, side))
    out = data.clone()
    out.edge_attr = kern.reshape(-1, side * side).contiguous()
    out.kernel_shape = [(side, side)] * len(data.kernel_shape) if collated else (side, side)
    return out


def fourier_lift(values: Tensor, freqs: Tensor) -> Tensor:
    """Lift scalars ``[...]`` to ``[..., 2F + 1]`` features: ``(v, sin(2π v B), cos(2π v B))``."""
    proj = 2 * math.pi * values.unsqueeze(-1) * freqs
    return torch.cat([values.unsqueeze(-1), proj.sin(), proj.cos()], dim=-1)


def layer_keys(batch: Tensor, node_layer: Tensor, num_layers: int) -> Tensor:
    """Dense id of each node's (graph, layer) group."""
    return batch * (num_layers + 1) + node_layer


def canonicalize_scale(edge_index: Tensor, edge_attr: Tensor, bias: Tensor, node_layer: Tensor, scalable: Tensor):
    """Remove the positive per-neuron scale symmetry of homogeneous activations, exactly.

    Layer by layer from the input side, every ``scalable`` neuron is rescaled so that its incoming weights and bias
    have unit L2 norm, and the inverse factor is pushed into its outgoing weights. The network function is unchanged
    and the result is the same for every rescaled twin. Returns new ``(edge_attr, bias)``.
    """
    edge_attr, bias = edge_attr.clone(), bias.clone()
    src, dst = edge_index
    for layer in range(1, int(node_layer.max()) + 1):
        nodes = scalable & (node_layer == layer)
        if not bool(nodes.any()):
            continue
        incoming = nodes[dst]
        sq = scatter(edge_attr[incoming].pow(2).sum(-1), dst[incoming], dim=0, dim_size=bias.numel(), reduce="sum")
        norm = (sq + bias.pow(2)).sqrt()
        factor = torch.where(nodes & (norm > 0), norm, torch.ones_like(norm))
        edge_attr = edge_attr / factor[dst].unsqueeze(-1) * factor[src].unsqueeze(-1)
        bias = bias / factor
    return edge_attr, bias


def layer_rms(values: Tensor, keys: Tensor, num_keys: int) -> Tensor:
    """RMS of the nonzero entries of ``values [M, k]`` per group ``keys [M]`` (1 for empty groups)."""
    nonzero = (values != 0).to(values.dtype).sum(-1)
    sq = scatter(values.pow(2).sum(-1), keys, dim=0, dim_size=num_keys, reduce="sum")
    cnt = scatter(nonzero, keys, dim=0, dim_size=num_keys, reduce="sum")
    rms = (sq / cnt.clamp(min=1)).sqrt()
    return torch.where(rms > 0, rms, torch.ones_like(rms))


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear-SiLU stack (no activation after the last layer)."""
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        mods.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            mods += [nn.SiLU(), nn.Dropout(dropout)]
    return nn.Sequential(*mods)


class NeuralGraphConv(MessagePassing):
    """Bidirectional message passing with FiLM edge modulation, residual LayerNorm updates and edge updates.

    Messages flow along every edge in both directions (a learned direction embedding tells them apart):
    ``m_ij = φm(FiLM_e(W_d h_i + W_s h_j + W_e e_ij + dir))`` with ``scale, shift = Linear(e_ij)``, aggregated by
    sum and scaled by ``1/sqrt(deg)``; ``h_i' = LN(h_i + φu([h_i, m_i]))``; optionally
    ``e_ij' = LN(e_ij + φe(U_s h_src + U_d h_dst + U_e e_ij))``. Node projections are computed per node before
    gathering, and the linear ``φm`` commutes with the sum (``Σ_j W x_j = W Σ_j x_j``), so it is applied once per
    node after aggregation: per-edge work is elementwise apart from the edge projections.
    """

    def __init__(self, hidden: int, edge_hidden: int, dropout: float = 0.0, update_edges: bool = True) -> None:
        super().__init__(aggr="add")
        self.lin_dst = nn.Linear(hidden, hidden)
        self.lin_src = nn.Linear(hidden, hidden, bias=False)
        self.lin_edge = nn.Linear(edge_hidden, 3 * hidden)  # edge term, FiLM scale, FiLM shift
        self.direction = nn.Embedding(2, hidden)
        self.dropout = nn.Dropout(dropout)
        self.phi_m = nn.Linear(hidden, hidden, bias=False)  # linear: applied after the sum, once per node
        self.phi_u = mlp([2 * hidden, hidden, hidden], dropout)
        self.norm = nn.LayerNorm(hidden)
        self.update_edges = update_edges
        if update_edges:
            self.edge_src = nn.Linear(hidden, edge_hidden)
            self.edge_dst = nn.Linear(hidden, edge_hidden, bias=False)
            self.edge_self = nn.Linear(edge_hidden, edge_hidden, bias=False)
            self.phi_e = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Linear(edge_hidden, edge_hidden))
            self.edge_norm = nn.LayerNorm(edge_hidden)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        edge_term, scale, shift = self.lin_edge(e).chunk(3, dim=-1)
        dst_term, src_term = self.lin_dst(h), self.lin_src(h)
        reverse = edge_index.flip(0)
        # One propagate per direction over the same edge tensors (no duplicated per-edge FiLM parameters); the
        # direction embedding is a per-node term, so it is added to the node projections, not to every message.
        aggr = sum(
            self.propagate(
                index,
                dst_term=dst_term + self.direction.weight[d],
                src_term=src_term,
                edge_term=edge_term,
                scale=scale,
                shift=shift,
            )  # fmt: skip
            for d, index in enumerate((edge_index, reverse))
        )
        ones = torch.ones(edge_index.shape[1], dtype=h.dtype, device=h.device)
        deg = scatter(ones, edge_index[1], dim=0, dim_size=h.shape[0]) + scatter(
            ones, edge_index[0], dim=0, dim_size=h.shape[0]
        )
        m = self.phi_m(aggr) / deg.clamp(min=1).sqrt().unsqueeze(-1)
        h_new = self.norm(h + self.phi_u(torch.cat([h, m], dim=-1)))
        if self.update_edges:
            src, dst = edge_index
            delta = self.edge_src(h_new)[src] + self.edge_dst(h_new)[dst] + self.edge_self(e)
            e = self.edge_norm(e + self.phi_e(delta))
        return h_new, e

    def message(
        self, dst_term_i: Tensor, src_term_j: Tensor, edge_term: Tensor, scale: Tensor, shift: Tensor
    ) -> Tensor:
        """``m_ij`` before the (linear, post-aggregation) ``φm``: FiLM-modulated sum of node and edge terms."""
        return self.dropout(F.silu((dst_term_i + src_term_j + edge_term) * (1 + scale) + shift))


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
        self.kind_emb = nn.Embedding(NUM_NODE_KINDS, h)
        self.in_pos_emb = nn.Embedding(cfg.max_input_pos, h)
        self.out_pos_emb = nn.Embedding(cfg.max_output_pos, h)
        self.act_emb = nn.Embedding(len(ACTIVATIONS), h)
        self.type_emb = nn.Embedding(NUM_NODE_TYPES, h)
        self.node_norm = nn.LayerNorm(h)
        self.edge_in = mlp([cfg.edge_dim * lifted, cfg.edge_hidden, cfg.edge_hidden])
        self.edge_norm = nn.LayerNorm(cfg.edge_hidden)
        self.convs = nn.ModuleList(
            NeuralGraphConv(h, cfg.edge_hidden, cfg.dropout, cfg.update_edges) for _ in range(cfg.depth)
        )
        self.readout = mlp([4 * h + cfg.edge_hidden, 2 * h, 2 * h], cfg.dropout)
        self.project = nn.Linear(2 * h, cfg.embed_dim)
        self.accuracy = mlp([2 * h, h, 1]) if cfg.accuracy_head else None

    def prepare(self, data: Data) -> Data:
        """Pad one graph's kernels to the encoder's ``edge_dim`` (call before batching mixed graphs)."""
        return pad_kernels(data, self.config.edge_dim)

    def _as_batch(self, batch: Data) -> Batch:
        if not isinstance(batch, Batch):
            batch = Batch.from_data_list([batch])
        if batch.edge_attr.shape[1] != self.config.edge_dim:
            batch = pad_kernels(batch, self.config.edge_dim)
        return batch

    def node_features(self, batch: Batch, bias: Tensor, log_scale: Tensor, num_layers: Tensor) -> Tensor:
        """Initial node states; never reads hidden node order (subclasses may, deliberately)."""
        cfg = self.config
        kind, pos = batch.node_kind, batch.node_pos
        from_out = (num_layers[batch.batch] - batch.node_layer).clamp(0, cfg.num_layers_max)
        zero = torch.zeros_like(pos)
        in_pos = self.in_pos_emb(torch.where(kind == 0, pos.clamp(min=0) % cfg.max_input_pos, zero))
        out_pos = self.out_pos_emb(torch.where(kind == 2, pos.clamp(min=0) % cfg.max_output_pos, zero))
        h = (
            self.bias_in(fourier_lift(bias, self.freqs))
            + self.scale_in(fourier_lift(log_scale, self.freqs))
            + self.layer_emb(batch.node_layer.clamp(0, cfg.num_layers_max))
            + self.layer_from_out_emb(from_out)
            + self.kind_emb(kind)
            + in_pos * (kind == 0).unsqueeze(-1)
            + out_pos * (kind == 2).unsqueeze(-1)
            + self.act_emb(batch.node_act)
            + self.type_emb(batch.node_type)
        )
        return self.node_norm(h)

    def representation(self, batch: Data) -> Tensor:
        """Pre-normalisation graph representation ``[B, 2 * hidden]``."""
        batch = self._as_batch(batch)
        cfg = self.config
        num_graphs = int(batch.num_graphs)
        bias, edge_attr, edge_index = batch.x.view(-1).float(), batch.edge_attr.float(), batch.edge_index
        if cfg.canonicalize_scale:
            homogeneous = torch.isin(batch.node_act, batch.node_act.new_tensor(HOMOGENEOUS_ACT_IDS))
            scalable = (batch.node_kind == 1) & homogeneous
            edge_attr, bias = canonicalize_scale(edge_index, edge_attr, bias, batch.node_layer, scalable)

        max_layer = int(batch.node_layer.max())
        num_keys = num_graphs * (max_layer + 1)
        node_key = layer_keys(batch.batch, batch.node_layer, max_layer)
        edge_key = node_key[edge_index[1]]
        rms = layer_rms(edge_attr, edge_key, num_keys)
        edge_attr = edge_attr / rms[edge_key].unsqueeze(-1)
        bias = bias / rms[node_key]
        num_layers = scatter(batch.node_layer, batch.batch, dim=0, dim_size=num_graphs, reduce="max")

        h = self.node_features(batch, bias, rms.log()[node_key], num_layers)
        e = self.edge_norm(self.edge_in(fourier_lift(edge_attr, self.freqs).flatten(1)))
        for conv in self.convs:
            h, e = conv(h, edge_index, e)
        return self.readout(self._pool(batch, h, e, node_key, num_keys, num_graphs))

    def _pool(self, batch: Batch, h: Tensor, e: Tensor, node_key: Tensor, num_keys: int, num_graphs: int) -> Tensor:
        """Invariant readout: input / output means, mean and max over per-layer hidden means, mean edge state."""
        kind, g = batch.node_kind, batch.batch
        pooled_in = scatter(h[kind == 0], g[kind == 0], dim=0, dim_size=num_graphs, reduce="mean")
        pooled_out = scatter(h[kind == 2], g[kind == 2], dim=0, dim_size=num_graphs, reduce="mean")
        hidden = kind == 1
        layer_mean = scatter(h[hidden], node_key[hidden], dim=0, dim_size=num_keys, reduce="mean")
        present = scatter(hidden.to(h.dtype), node_key, dim=0, dim_size=num_keys, reduce="sum") > 0
        key_graph = torch.arange(num_keys, device=h.device) // (num_keys // num_graphs)  # keys are graph-major
        hid_mean = scatter(layer_mean[present], key_graph[present], dim=0, dim_size=num_graphs, reduce="mean")
        hid_max = scatter(layer_mean[present], key_graph[present], dim=0, dim_size=num_graphs, reduce="max")
        edge_mean = scatter(e, g[batch.edge_index[1]], dim=0, dim_size=num_graphs, reduce="mean")
        return torch.cat([pooled_in, hid_mean, hid_max, pooled_out, edge_mean], dim=-1)

    def forward(self, batch: Data) -> Tensor:
        """L2-normalised embeddings ``[B, embed_dim]``."""
        return F.normalize(self.project(self.representation(batch)), dim=-1)

    def embed_and_predict(self, batch: Data) -> tuple[Tensor, Tensor]:
        """Embeddings and predicted accuracy in [0, 1] from one forward pass."""
        if self.accuracy is None:
            raise RuntimeError("encoder was built with accuracy_head=False")
        rep = self.representation(batch)
        return F.normalize(self.project(rep), dim=-1), torch.sigmoid(self.accuracy(rep)).squeeze(-1)

    def predict_accuracy(self, batch: Data) -> Tensor:
        """Predicted test accuracy in [0, 1], ``[B]`` (needs ``accuracy_head=True``)."""
        return self.embed_and_predict(batch)[1]
