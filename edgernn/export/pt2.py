"""A `.pt2` file from `torch.export.save` as a module edgernn can stream, without running user code.

    model = pt2.load("model.pt2")      # an nn.Module: export_module(model, "model.onnx")

torch.export writes the model as a graph of aten operators with the layers flattened away, the
RNNs' zero initial states built inside and, usually, the example's batch and length baked in.
`Pt2Module` runs that graph through an fx Interpreter, but hands each recurrent operator
(aten.lstm/gru/rnn_tanh/rnn_relu) and each aten.conv1d to a real nn.LSTM/…/Conv1d rebuilt from
its weights and registered under the path the graph remembers (`nn_module_stack`), so that
edgernn.export.streamify threads their state as it does for a module written in Python. The
graph's shape guards are skipped; a graph that fixes shapes elsewhere (a view to the example's
size) fails its parity check at other lengths and is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgernn.core.errors import InputError, ModelFileError

_RNN_OPS = {"aten.lstm.input": nn.LSTM, "aten.gru.input": nn.GRU, "aten.rnn_tanh.input": nn.RNN,
            "aten.rnn_relu.input": nn.RNN}
_CONV_OPS = ("aten.conv1d.default", "aten.conv1d.padding")


def load(path) -> "Pt2Module":
    """The module of a torch.export `.pt2` file (loading it runs no user code)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a .pt2 written by torch.export.save")
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # torch.export's own refusal of a damaged or foreign file
        raise ModelFileError(f"{path}: not a readable torch.export program ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160] if str(e) else ''}); expected torch.export.save output") from e
    return Pt2Module(program.module(), source=str(path))


def _path(node, used: set) -> str:
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    path = stack[-1][0] if stack else ""
    path = path.replace("L__self___", "").replace("getattr(", "").replace(")", "") or node.name
    while path in used:
        path += "_"
    used.add(path)
    return path


def _attach(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, leaf = path.split(".")
    at = root
    for p in parents:
        if not hasattr(at, p):
            at.add_module(p, nn.Module())
        at = getattr(at, p)
    at.add_module(leaf, module)


def _rnn(op: str, args, gm) -> nn.RNNBase:
    """The nn.LSTM/GRU/RNN an aten recurrent operator computes, with its weights."""
    _, _, params, has_biases, layers, _, _, bidirectional, batch_first = args[:9]
    weights = [_tensor(gm, p) for p in params]
    cls = _RNN_OPS[op]
    gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}[cls]
    per = len(weights) // (layers * (2 if bidirectional else 1))  # 2 or 4, one more with a projection
    w_ih, w_hh = weights[0], weights[1]
    kw = {"nonlinearity": "relu" if op == "aten.rnn_relu.input" else "tanh"} if cls is nn.RNN else {}
    if cls is nn.LSTM and per in (3, 5):
        kw["proj_size"] = weights[per - 1].shape[0]
    m = cls(w_ih.shape[1], w_hh.shape[0] // gates, num_layers=layers, bias=bool(has_biases),
            batch_first=bool(batch_first), bidirectional=bool(bidirectional), **kw)
    with torch.no_grad():
        for name, w in zip(m._flat_weights_names, weights):
            getattr(m, name).copy_(w)
    return m


def _tensor(gm, node):
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        raise ModelFileError("a recurrent or conv operator whose weights are computed in the graph; "
                             "expected weights stored in the .pt2")
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj.detach()


def _conv(op: str, args, gm) -> nn.Conv1d:
    weight = _tensor(gm, args[1])
    bias = _tensor(gm, args[2]) if len(args) > 2 and args[2] is not None else None
    stride = args[3] if len(args) > 3 else [1]
    padding = args[4] if len(args) > 4 else ([0] if op.endswith("default") else "valid")
    dilation = args[5] if len(args) > 5 else [1]
    groups = args[6] if len(args) > 6 else 1
    m = nn.Conv1d(weight.shape[1] * groups, weight.shape[0], weight.shape[2], stride=stride, padding=padding,
                  dilation=dilation, groups=groups, bias=bias is not None)
    with torch.no_grad():
        m.weight.copy_(weight)
        if bias is not None:
            m.bias.copy_(bias)
    return m


def _input_hint(gm) -> dict:
    """x's size from the example the graph was exported with (tokens: the embedding's rows)."""
    vals = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder" and "val" in n.meta]
    if not vals:
        return {}
    if torch.is_floating_point(vals[0]):
        return {"features": int(vals[0].shape[-1])}
    emb = [n for n in gm.graph.nodes if str(n.target) == "aten.embedding.default"]
    return {"vocab": int(_tensor(gm, emb[0].args[0]).shape[0])} if emb else {}


class Pt2Module(nn.Module):
    """forward(x) -> y over a torch.export graph, its RNN and Conv1d operators as real layers."""

    def __init__(self, gm: torch.fx.GraphModule, *, source: str = ".pt2"):
        super().__init__()
        object.__setattr__(self, "_gm", gm)  # not a submodule: its weights live in the rebuilt layers
        for t in (*gm.parameters(), *gm.buffers()):  # the rest become constants of the traced graph
            t.requires_grad_(False)
        self.source = source
        self._layers = {}
        used = set()
        for node in gm.graph.nodes:
            op = str(node.target)
            if node.op == "call_function" and (op in _RNN_OPS or op in _CONV_OPS):
                try:
                    layer = _rnn(op, node.args, gm) if op in _RNN_OPS else _conv(op, node.args, gm)
                except ModelFileError:  # weights computed in the graph: the op stays as it is, stateless,
                    continue            # and the streaming probe names it if that matters
                path = _path(node, used)
                _attach(self, path, layer)
                self._layers[node.name] = path
        self.edgernn_input = _input_hint(gm)  # {"features": F} or {"vocab": V}, for export_module


    def forward(self, x):
        return _Run(self).run(x)


class _Run(torch.fx.Interpreter):
    def __init__(self, owner: Pt2Module):
        super().__init__(owner._gm)
        self.owner = owner

    def call_module(self, target, args, kwargs):
        if str(target).startswith("_guards"):  # the example's shape checks: parity decides instead
            return None
        return super().call_module(target, args, kwargs)

    def run_node(self, n):
        path = self.owner._layers.get(n.name)
        if path is None:
            return super().run_node(n)
        args, _ = self.fetch_args_kwargs_from_env(n)
        layer = self.owner.get_submodule(path)
        if isinstance(layer, nn.Conv1d):
            return layer(args[0])
        y, state = layer(args[0])
        return (y, *state) if isinstance(state, tuple) else (y, state)

