"""Model.summary's table: each layer's output shape, parameter count and forward FLOPs."""
from .layer import _fmt_shape


def summary_table(model, input_shape=None, print_fn=print):
    """The text of Model.summary (printed through print_fn unless it is None)."""
    if input_shape is None:
        input_shape = model._default_input_shape()
    if input_shape is None:
        raise ValueError(f"{type(model).__name__}.summary: input_shape is required (e.g. (3, 32, 32))")
    shapes_in = [input_shape] if model._n_inputs == 1 or not isinstance(input_shape[0], (tuple, list)) \
        else list(input_shape)
    shapes_in = [(1,) + tuple(s) for s in shapes_in]
    shapes = model._shapes(shapes_in)
    rows = [("layer", "type", "output shape", "params", "FLOPs")]
    tp = tf = 0
    for i, (n, layer, ins) in enumerate(model._nodes):
        np_ = sum(p.size for p in layer.parameters())
        fl = layer.flops([shapes_in[-1 - j] if j < 0 else shapes[j] for j in ins], shapes[i])
        tp += np_
        tf += fl
        rows.append((n, type(layer).__name__, _fmt_shape((None,) + shapes[i][1:]), f"{np_:,}", f"{fl:,}"))
    ntrain = sum(p.size for p in model.parameters() if p.requires_grad)
    rows.append(("total", "", "", f"{tp:,}", f"{tf:,}"))
    return format_table(rows, f"trainable params: {ntrain:,}   input {_fmt_shape((None,) + tuple(shapes_in[0][1:]))}"
                              f"   FLOPs per sample (forward, multiply-add = 2)", print_fn)


def format_table(rows, footer, print_fn=print):
    """The summary's text: a header row, the layer rows and a total row (five columns, the first three
    left-aligned), ruled off, then the footer; printed through print_fn unless it is None."""
    w = [max(len(r[c]) for r in rows) for c in range(5)]
    line = "-" * (sum(w) + 8)
    out = []
    for k, r in enumerate(rows):
        if k in (1, len(rows) - 1):
            out.append(line)
        out.append("  ".join(r[c].ljust(w[c]) if c < 3 else r[c].rjust(w[c]) for c in range(5)))
    out.append(footer)
    text = "\n".join(out)
    if print_fn is not None:
        print_fn(text)
    return text
