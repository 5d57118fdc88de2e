"""The containers: Input, Model, Sequential and Graph (a small functional API for DAGs). A model runs its nodes in
topological order; backward runs in reverse, sums gradients where a value fans out, skips what nothing needs."""
import zlib

import numpy as np

from . import profiler as _profiler
from ._fusion import relu_fusions
from ._summary import summary_table
from ._registry import _BASES, _layer_config, _layer_from_config
from ._validate import check_int as _int
from .layer import Layer, Node, _keeps_running_stats
from .parameter import grads_ready


def Input(shape=None, name=None):
    """A graph input. `shape` excludes the batch dimension, e.g. (3, 32, 32); it lets the graph check
    every layer's input shape as it is built, and the arrays it is called with (as Keras). Without a shape
    the graph takes any input size its layers accept."""
    if shape is not None:
        if not isinstance(shape, (tuple, list)):
            raise TypeError(f"Input: shape must be a tuple of ints without the batch dimension, e.g. (3, 32, 32), "
                            f"got {type(shape).__name__}")
        shape = tuple(_int("Input", "shape", d, minimum=1) for d in shape)
    return Node(None, [], shape, name=name)


class Model(Layer):
    """A graph of layers, run in topological order. Subclasses fill self._nodes (name, layer, input
    indices; index < 0 means model input -1 - index) and self._n_inputs. Models are built with Sequential
    or Graph: a layer assigned to a model's attribute (torch style) is a TypeError, as it would take no part."""

    def __init__(self, seed=0, name=None):
        super().__init__(name=name)
        self._nodes = []
        self._n_inputs = 1
        self._shape_memo = None
        self.model_seed = int(seed)

    def __setattr__(self, name, value):
        # A model runs the layers of self._nodes, which Sequential and Graph fill; a layer kept in an attribute
        # (torch style) would be in neither parameters() nor forward and backward, so it is refused here
        # rather than silently left out. self._nodes holds (name, layer, inputs) tuples, never bare layers.
        held = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
        if any(isinstance(v, Layer) for v in held):
            label = self.label() if "name" in self.__dict__ else type(self).__name__   # before Layer.__init__ too
            raise TypeError(f"{label}: cannot assign a {type(value).__name__} to attribute '{name}': a ck model "
                            f"does not collect layers from its attributes (their parameters would be missing from "
                            f"parameters(), forward and backward). Build the model with ck.Sequential(layer, ...) or "
                            f"the functional API, ck.Graph(inputs, output); either can be a layer of another model")
        super().__setattr__(name, value)

    def _finish(self):
        names = [n for n, _, _ in self._nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: layer names must be unique, got {names}")
        seen = {}
        for n, layer, _ in self._nodes:
            if id(layer) in seen:
                raise ValueError(f"{type(self).__name__}: layer {layer!r} is used twice ('{seen[id(layer)]}' and "
                                 f"'{n}'); a layer holds one forward cache, so build a new layer for each use")
            seen[id(layer)] = n
        self.manual_seed(self.model_seed)

    @property
    def layers(self):
        return {n: layer for n, layer, _ in self._nodes}

    def __getitem__(self, key):
        """model[i] (negative counts from the end) or model["name"]: that layer."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not -len(self._nodes) <= key < len(self._nodes):
                raise IndexError(f"{self.label()}: layer index {key} out of range for {len(self._nodes)} layers")
            return self._nodes[key][1]
        if isinstance(key, str):
            if key not in self.layers:
                raise KeyError(f"{self.label()}: no layer named {key!r}; the layers are {list(self.layers)}")
            return self.layers[key]
        raise TypeError(f"{self.label()}: index with an int or a layer name, got {type(key).__name__}")

    def __len__(self):
        return len(self._nodes)

    def named_parameters(self, prefix=""):
        for n, layer, _ in self._nodes:
            yield from layer.named_parameters(prefix + n + ".")

    def named_buffers(self, prefix=""):
        for n, layer, _ in self._nodes:
            yield from layer.named_buffers(prefix + n + ".")

    def named_layers(self, prefix=""):
        yield prefix.rstrip("."), self
        for n, layer, _ in self._nodes:
            yield from layer.named_layers(prefix + n + ".")

    def manual_seed(self, seed):
        self.model_seed = int(seed)
        for path, l in list(self.named_layers()):
            if l.stochastic:
                key = [int(seed), zlib.crc32(path.encode())]
                l.seed = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])
                l.offset = 0
        return self

    # ------------------------------------------------------------ shapes
    def _input_label(self, i):
        return "the model input" if self._n_inputs == 1 else f"model input {i}"

    def _src_label(self, j):
        if j < 0:
            return self._input_label(-1 - j)
        n, layer, _ = self._nodes[j]
        return f"layer '{n}' {type(layer).__name__}"

    def _shapes(self, in_shapes):
        """Output shape of every node; a mismatch names the producing and the consuming layer."""
        in_shapes = tuple(tuple(s) for s in in_shapes)
        if self._shape_memo is not None and self._shape_memo[0] == in_shapes:
            return self._shape_memo[1]
        out = []
        for n, layer, ins in self._nodes:
            shapes = [in_shapes[-1 - j] if j < 0 else out[j] for j in ins]
            try:
                out.append(tuple(layer.output_shape(*shapes)))
            except ValueError as e:
                src = "; ".join(f"{self._src_label(j)} gives {s}" for j, s in zip(ins, shapes))
                raise ValueError(f"{type(self).__name__}: shape mismatch: {src}, but layer '{n}' {layer!r} "
                                 f"cannot take it: {e}") from None
        self._shape_memo = (in_shapes, out)
        return out

    def output_shape(self, *in_shapes):
        if len(in_shapes) != self._n_inputs:
            raise ValueError(f"{type(self).__name__}: expected {self._n_inputs} input(s), got {len(in_shapes)}")
        return self._shapes(in_shapes)[-1]

    def flops(self, in_shapes, out_shape):
        shapes = self._shapes(in_shapes)
        total = 0
        for i, (n, layer, ins) in enumerate(self._nodes):
            total += layer.flops([in_shapes[-1 - j] if j < 0 else shapes[j] for j in ins], shapes[i])
        return total

    # ------------------------------------------------------------ forward and backward
    def forward(self, *xs):
        if len(xs) != self._n_inputs:
            raise ValueError(f"{type(self).__name__}.forward: expected {self._n_inputs} input(s), got {len(xs)}")
        self._check_inputs(*xs)   # every mismatch is reported before any work is done
        fused = relu_fusions(self._nodes)
        vals = []
        for i, (n, layer, ins) in enumerate(self._nodes):
            args = [xs[-1 - j] if j < 0 else vals[j] for j in ins]
            fwd = layer.forward_fused if i - 1 in fused else layer.forward   # a conv fused with it ran the ReLU
            if _profiler.active is not None:
                fwd = _profiler.timed(layer, "forward", fwd, n)
            vals.append(fwd(*args, relu=True) if i in fused else fwd(*args))
        self._cache = True
        return vals[-1]


    def backward(self, dout, need_dx=False):
        """Backpropagate dout (the gradient of the loss w.r.t. the output); parameter grads accumulate.

        Returns dx (a tuple for several inputs) when need_dx is true, else None: by default the model's
        input gradient, which nothing inside needs, is not computed."""
        if _profiler.active is not None:
            return _profiler.timed(self, "backward", self._backward)(dout, need_dx)
        return self._backward(dout, need_dx)

    def _backward(self, dout, need_dx):
        self._need_cache(dout)
        need_in = need_dx if isinstance(need_dx, (tuple, list)) else (bool(need_dx),) * self._n_inputs
        # needs[i]: does anything want the gradient of node i's output?
        needs = []
        for n, layer, ins in self._nodes:
            own = any(p.requires_grad for p in layer.parameters())
            needs.append(own or any(need_in[-1 - j] if j < 0 else needs[j] for j in ins))
        grads = {len(self._nodes) - 1: dout}
        dxs = [None] * self._n_inputs
        for i in range(len(self._nodes) - 1, -1, -1):
            n, layer, ins = self._nodes[i]
            g = grads.pop(i, None)
            if g is None or not needs[i]:
                layer._cache = None
                continue
            want = [need_in[-1 - j] if j < 0 else needs[j] for j in ins]
            bwd = layer.backward if _profiler.active is None else _profiler.timed(layer, "backward", layer.backward, n)
            d = bwd(g, need_dx=want[0] if len(ins) == 1 else tuple(want))
            grads_ready(layer)    # this use of the layer has added its parameter gradients
            d = (d,) if len(ins) == 1 else tuple(d)
            for j, w, dj in zip(ins, want, d):
                if not w or dj is None:
                    continue
                if j < 0:
                    k = -1 - j
                    dxs[k] = dj if dxs[k] is None else dxs[k] + dj
                else:
                    # fan-out: sum out of place, as a branch may hand the same array to several inputs
                    grads[j] = dj if j not in grads else grads[j] + dj
        if not any(need_in):
            return None
        return dxs[0] if self._n_inputs == 1 else tuple(dxs)

    # ------------------------------------------------------------ transfer learning
    def _layer_at(self, path):
        layer = self
        for part in path.split("."):
            if not isinstance(layer, Model) or part not in layer.layers:
                where = "this model" if layer is self else f"{type(layer).__name__} at '{path}'"
                names = list(layer.layers) if isinstance(layer, Model) else []
                raise ValueError(f"{type(self).__name__}: no layer '{path}' ('{part}' is not in {where}; "
                                 f"expected one of {names})")
            layer = layer.layers[part]
        return layer

    def _prefix(self, path):
        """The layers that run up to and including the one at `path` (a node name, or a dotted path into
        nested models: every earlier node at each level, then the prefix inside)."""
        head, _, rest = path.partition(".")
        names = [n for n, _, _ in self._nodes]
        if head not in names:
            raise ValueError(f"{type(self).__name__}: up_to must name a layer, got '{path}' ('{head}' is not one "
                             f"of {names})")
        k = names.index(head)
        out = [layer for _, layer, _ in self._nodes[:k]]
        layer = self._nodes[k][1]
        if rest:
            if not isinstance(layer, Model):
                raise ValueError(f"{type(self).__name__}: '{head}' is a {type(layer).__name__}, "
                                 f"it has no layer '{rest}'")
            return out + layer._prefix(rest)
        return out + [layer]

    def _set_frozen(self, layers, frozen):
        for top in layers:
            for _, layer in top.named_layers():
                layer.frozen = frozen
                for p in layer._params.values():
                    p.requires_grad = not frozen
                if _keeps_running_stats(layer):
                    layer.training = False if frozen else self.training

    def freeze(self, *names, up_to=None):
        """Freeze layers for transfer learning: their parameters get requires_grad = False (no gradient is
        computed for them, and backward skips every layer below the first trainable one), and the BatchNorm
        layers among them stay in inference mode, even in model.train() (see Layer.train).

        ``freeze()`` freezes everything; ``freeze(up_to="layer3")`` every layer that runs up to and
        including layer3 (a dotted path such as "layer3.1" or "features.10" reaches inside); ``freeze("conv1",
        "layer1")`` the named layers. Freeze before building the optimizer: an optimizer only steps the
        parameters that were trainable when it was built. Returns the model."""
        targets = [self._layer_at(n) for n in names]
        if up_to is not None:
            targets += self._prefix(up_to)
        if not names and up_to is None:
            targets = [self]
        self._set_frozen(targets, True)
        return self

    def unfreeze(self, *names, up_to=None):
        """Undo freeze: ``unfreeze()`` for everything, or the named layers / the prefix up to ``up_to``.
        Their parameters become trainable and their BatchNorm layers follow the model's mode again. Build
        the optimizer again afterwards (or add a param group) so that it steps them. Returns the model."""
        targets = [self._layer_at(n) for n in names]
        if up_to is not None:
            targets += self._prefix(up_to)
        if not names and up_to is None:
            targets = [self]
        self._set_frozen(targets, False)
        return self

    def replace_head(self, num_classes=None, head=None, seed=None):
        """Replace the last layer that has parameters (the classifier: ``fc`` in a ResNet, ``classifier.6``
        in VGG) by a new trainable one, in the same place and under the same name: a fresh Linear(in_features,
        num_classes) of the same dtype and initialisation, or the given `head` layer. Returns the new head."""
        if (num_classes is None) == (head is None):
            raise ValueError(f"{type(self).__name__}.replace_head: give exactly one of num_classes and head")
        owner, i = None, None
        stack = [self]
        while stack:
            m = stack.pop()
            for k in range(len(m._nodes) - 1, -1, -1):
                layer = m._nodes[k][1]
                if isinstance(layer, Model):
                    if any(True for _ in layer.named_parameters()):
                        stack.append(layer)
                        break
                elif layer._params:
                    owner, i = m, k
                    break
        if owner is None:
            raise ValueError(f"{type(self).__name__}.replace_head: the model has no layer with parameters")
        name, old, ins = owner._nodes[i]
        if head is None:
            from .layers import Linear
            if not isinstance(old, Linear):
                raise TypeError(f"{type(self).__name__}.replace_head: the last layer with parameters ('{name}') is "
                                f"a {type(old).__name__}, not a Linear; pass head=... instead of num_classes")
            if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
                raise ValueError(f"{type(self).__name__}.replace_head: num_classes must be a positive int, "
                                 f"got {num_classes!r}")
            head = Linear(old.in_features, int(num_classes), bias="bias" in old._params, weight_init=old.weight_init,
                          bias_init=old.bias_init, seed=seed, dtype=old.weight.dtype)
        elif not isinstance(head, Layer):
            raise TypeError(f"{type(self).__name__}.replace_head: head must be a Layer, got {type(head).__name__}")
        head.name = old.name
        head.train(self.training)
        owner._nodes[i] = (name, head, ins)
        for _, m in self.named_layers():
            if isinstance(m, Model):
                m._shape_memo = None
        return head

    # ------------------------------------------------------------ summary
    def summary(self, input_shape=None, print_fn=print):
        """Print (and return) a table of layers: output shape, parameter count, forward FLOPs.

        input_shape excludes the batch dimension; the FLOPs are for one sample. A Graph built on an
        Input with a shape needs none."""
        return summary_table(self, input_shape, print_fn)

    def _default_input_shape(self):
        return None


class Sequential(Model):
    """Layers applied one after another. Named "0", "1", ... (as torch.nn.Sequential), unless a layer
    has a name."""

    def __init__(self, *layers, seed=0, name=None):
        super().__init__(seed=seed, name=name)
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: argument {i} must be a Layer, got {type(layer).__name__}")
            self._nodes.append((layer.name or str(i), layer, [i - 1 if i > 0 else -1]))
        if not self._nodes:
            raise ValueError("Sequential: needs at least one layer")
        self._finish()

    def __getitem__(self, key):
        """As Model's, and model[a:b] (step 1): a Sequential of those layers, sharing them and their weights
        with this model (as torch.nn.Sequential's slicing); the layers keep their names and RNG streams."""
        if not isinstance(key, slice):
            return super().__getitem__(key)
        if key.step not in (None, 1):
            raise ValueError(f"{self.label()}: a slice of layers must have step 1, got {key.step}")
        nodes = self._nodes[key]
        if not nodes:
            raise ValueError(f"{self.label()}: the slice [{key.start}:{key.stop}] selects no layers "
                             f"(the model has {len(self._nodes)})")
        part = Sequential.__new__(Sequential)
        Model.__init__(part, seed=self.model_seed)
        part._nodes = [(n, layer, [i - 1 if i > 0 else -1]) for i, (n, layer, _) in enumerate(nodes)]
        return part

    def config(self):
        return {"layers": [_layer_config(n, l) for n, l, _ in self._nodes], "seed": self.model_seed}

    @classmethod
    def from_config(cls, cfg):
        return cls(*[_layer_from_config(c) for c in cfg["layers"]], seed=cfg.get("seed", 0))

    def __repr__(self):
        body = "".join(f"\n  ({n}): {l!r}".replace("\n", "\n  ") if isinstance(l, Model) else f"\n  ({n}): {l!r}"
                       for n, l, _ in self._nodes)
        return f"Sequential({body}\n)"


class Graph(Model):
    """A DAG built with the functional API:

        x = ck.Input((3, 32, 32))
        h = ck.ReLU()(ck.Conv2d(3, 16, 3, padding=1)(x))
        y = ck.ReLU()(ck.Add()(ck.Conv2d(16, 16, 3, padding=1)(h), h))
        model = ck.Graph(x, y)

    Nodes are named after their layer's ``name`` or, when it has none, "<type><k>" (conv2d0, relu1, ...).
    """

    def __init__(self, inputs, output, seed=0, name=None):
        super().__init__(seed=seed, name=name)
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not isinstance(output, Node):
            raise TypeError(f"Graph: output must be a Node, got {type(output).__name__}")
        for i, x in enumerate(inputs):
            if not isinstance(x, Node) or x.layer is not None:
                raise TypeError(f"Graph: inputs[{i}] must be a node made by ck.Input, got {x!r}")
        self._n_inputs = len(inputs)
        self._input_shapes = [x.shape for x in inputs]
        self._input_names = [x.name or (f"input{i}" if len(inputs) > 1 else "input") for i, x in enumerate(inputs)]
        order, state = [], {}

        def visit(node):   # iterative DFS post-order: topological order without recursion limits
            stack = [(node, False)]
            while stack:
                nd, done = stack.pop()
                if done:
                    if state.get(id(nd)) != 2:
                        state[id(nd)] = 2
                        order.append(nd)
                    continue
                if state.get(id(nd)) == 2:
                    continue
                state[id(nd)] = 1
                stack.append((nd, True))
                for src in reversed(nd.inputs):
                    if state.get(id(src)) != 2:
                        stack.append((src, False))

        visit(output)
        index = {id(x): -1 - i for i, x in enumerate(inputs)}
        counts = {}
        used = {n.name for n in order if n.layer is not None and n.layer.name}
        for nd in order:
            if nd.layer is None:
                if id(nd) not in index:
                    raise ValueError(f"Graph: the output depends on an input that is not in `inputs`: {nd!r}")
                continue
            name = nd.layer.name
            if not name:
                base = type(nd.layer).__name__.lower()
                while True:
                    k = counts.get(base, 0)
                    counts[base] = k + 1
                    name = f"{base}{k}"
                    if name not in used:
                        break
            used.add(name)
            index[id(nd)] = len(self._nodes)
            self._nodes.append((name, nd.layer, [index[id(s)] for s in nd.inputs]))
        if not self._nodes:
            raise ValueError("Graph: the output is an input; there are no layers")
        self._finish()

    def forward(self, *xs):
        # An input declared with a shape (ck.Input((3, 32, 32))) takes only that shape, as in Keras; an
        # input declared without one takes any shape its layers accept.
        for x, name, want in zip(xs, self._input_names, self._input_shapes):
            if want is not None and hasattr(x, "shape") and tuple(x.shape[1:]) != want:
                raise ValueError(f"{self.label()}: input '{name}' was declared with shape (N, "
                                 f"{', '.join(map(str, want))}), got {tuple(x.shape)}")
        return super().forward(*xs)

    def _default_input_shape(self):
        if all(s is not None for s in self._input_shapes):
            return self._input_shapes[0] if self._n_inputs == 1 else self._input_shapes
        return None

    def config(self):
        nodes = []
        for n, l, ins in self._nodes:
            c = _layer_config(n, l)
            c["inputs"] = [self._input_names[-1 - j] if j < 0 else self._nodes[j][0] for j in ins]
            nodes.append(c)
        return {"inputs": [{"name": n, "shape": None if s is None else list(s)}
                           for n, s in zip(self._input_names, self._input_shapes)],
                "nodes": nodes, "seed": self.model_seed}

    @classmethod
    def from_config(cls, cfg):
        env = {}
        ins = []
        for spec in cfg["inputs"]:
            env[spec["name"]] = Input(spec["shape"], name=spec["name"])
            ins.append(env[spec["name"]])
        last = None
        for c in cfg["nodes"]:
            layer = _layer_from_config(c)
            layer.name = c["name"]
            last = env[c["name"]] = layer(*[env[s] for s in c["inputs"]])
        return cls(ins, last, seed=cfg.get("seed", 0))

    def __repr__(self):
        lines = []
        for n, l, ins in self._nodes:
            src = ", ".join(self._input_names[-1 - j] if j < 0 else self._nodes[j][0] for j in ins)
            lines.append(f"\n  {n} = {l!r}({src})")
        return f"Graph({''.join(lines)}\n)"


_BASES.update(Model=Model, Sequential=Sequential, Graph=Graph)

__all__ = ["Layer", "Node", "Input", "Model", "Sequential", "Graph"]
