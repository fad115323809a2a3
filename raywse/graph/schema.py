"""The neural-graph schema: what every field of a neural graph means, and the node-kind / node-type enums.

A neural graph is a ``torch_geometric.data.Data`` with one node per neuron (input features or channels, then every
linear / conv output neuron, layer by layer) and one edge per weight (per input-output pair for convs: the kernel is
the edge's feature vector). An LSTM layer is five node sets (``node_layer`` values) of its hidden size — input,
forget, cell and output gates, then the hidden state — with input edges and recurrent edges (from its hidden state)
into each gate, and an edge of weight 1 from each gate to its unit's hidden state (a bidirectional layer: each
direction's four gate sets, then both hidden states, ten sets); a ``magnitude`` layer's neuron has
edges of weight 1 from the two channels it pairs; a residual connection's identity is ``n`` edges of weight 1. An
attention layer is three node sets — queries, keys, attended values — with edges of weight 1 from each query and key
to each value of its head; a layer norm's feature has one edge, from its input, carrying its scale; an embedding's
inputs are its tables' rows (tokens, positions, token types); a patch embedding's are the image channels (with
kernel edges), the class token's row and the position rows.
Fields, all indexed by node unless said otherwise:

========================  =================  =============================================================
field                     shape / dtype      meaning
========================  =================  =============================================================
``x``                     ``[N, 1]`` float   bias of the neuron (0 for input nodes; an LSTM gate: both its biases)
``node_layer``            ``[N]`` long       0 for inputs, ``l`` for the ``l``-th node set (linear / conv layer)
``node_kind``             ``[N]`` long       :class:`NodeKind`
``node_pos``              ``[N]`` long       position of an input / output neuron; -1 for hidden neurons
``node_act``              ``[N]`` long       index into :data:`raywse.core.spec.ACTIVATIONS` applied after it
``node_type``             ``[N]`` long       :class:`NodeType`
``act_slope``             ``[N]`` float      slope below zero of the activation after it (PReLU: learned; 1 for
                                             none, 0 for relu, 0.01 for leaky_relu, 0 if not piecewise linear)
``edge_index``            ``[2, E]`` long    source (previous layer; an earlier one for a residual; an LSTM's hidden
                                             state for its recurrent edges) → target;
                                             per weight tensor, target-major, row-major order
``edge_attr``             ``[E, kh*kw]``     the weight (kernel) of the edge, fitted to at most 3×3, centre-padded to
                                             ``kernel_shape`` (:func:`raywse.graph.kernels.fit_kernels`)
``probe_act``             ``[N, P]`` float   responses on the ``P`` probe inputs (:mod:`~raywse.graph.probes`)
``kernel_shape``          ``(kh, kw)``       edge feature layout
``model_id``              str                the checkpoint's id
``probe_source``          str                where the probes came from (``none``: not run, ``probe_act`` zeros)
========================  =================  =============================================================

Hidden neurons carry no identity: only their features and edges tell them apart, so any function of the graph that
never reads hidden node order is invariant to the network's hidden-neuron permutation symmetry.
"""

from __future__ import annotations

from enum import IntEnum

from raywse.core.spec import ACTIVATIONS, ODD, POSITIVELY_HOMOGENEOUS


class NodeKind(IntEnum):
    """Where a neuron sits: the network's inputs, a hidden layer, or its outputs."""

    INPUT = 0
    HIDDEN = 1
    OUTPUT = 2


class NodeType(IntEnum):
    """What produced a neuron: an input, a linear or conv (1-D or 2-D) layer, one of an LSTM's gates (their
    nonlinearity is ``node_act``) or its hidden state ``h = o * tanh(f * c + i * g)``, one of a GRU's reset and update
    gates, its recurrent candidate term ``m = W_hn h + b_hn``, its candidate ``n = tanh(W_in x + b_in + r * m)`` or
    its hidden state ``h' = (1 - z) * n + z * h``, a :data:`MAGNITUDE`
    ``sqrt(a² + b²)`` of a channel pair, an embedding (sum of the rows its inputs pick; a patch embedding's feature:
    its patch projection plus the class-token or position row its position picks), an attention's query, key or
    attended value (``softmax(q·k / sqrt(d)) v`` over the positions, per head; a causal attention's attended value
    is its own type, as it reads only the earlier positions), a layer norm's feature (its input
    normalised over its layer's inputs, times its edge's weight, plus its bias), or a group norm's channel (likewise,
    normalised over its group's channels and positions). A bidirectional LSTM's or GRU's reverse hidden state is its
    own type (``*_REVERSE_HIDDEN``), so the two directions are told apart."""

    INPUT = 0
    LINEAR = 1
    CONV = 2
    LSTM_INPUT_GATE = 3
    LSTM_FORGET_GATE = 4
    LSTM_CELL_GATE = 5
    LSTM_OUTPUT_GATE = 6
    LSTM_HIDDEN = 7
    MAGNITUDE = 8
    EMBEDDING = 9
    ATTENTION_QUERY = 10
    ATTENTION_KEY = 11
    ATTENTION_VALUE = 12
    LAYERNORM = 13
    GROUPNORM = 14
    GRU_RESET_GATE = 15
    GRU_UPDATE_GATE = 16
    GRU_RECURRENT_CANDIDATE = 17
    GRU_CANDIDATE = 18
    GRU_HIDDEN = 19
    ATTENTION_CAUSAL_VALUE = 20
    LSTM_REVERSE_HIDDEN = 21
    GRU_REVERSE_HIDDEN = 22


#: Neurons computing ``activation(weights · inputs + bias)``: the only ones weight-space rescaling and sign flips
#: apply to.
AFFINE_NODE_TYPES = (NodeType.LINEAR, NodeType.CONV)


#: Per-node integer fields besides ``x`` (stored as Arrow int64 lists, permuted together with the nodes).
NODE_COLUMNS = ("node_layer", "node_kind", "node_pos", "node_act", "node_type")
#: Every per-node field, ``x`` and ``probe_act`` included: what a node permutation must reorder.
NODE_FIELDS = ("x", "act_slope", "probe_act", *NODE_COLUMNS)
#: ``node_act`` ids of activations that commute with positive per-neuron scaling.
HOMOGENEOUS_ACT_IDS = tuple(ACTIVATIONS.index(a) for a in POSITIVELY_HOMOGENEOUS)
#: ``node_act`` ids of odd activations (a neuron followed by one can flip its sign).
ODD_ACT_IDS = tuple(ACTIVATIONS.index(a) for a in ODD)
