"""Which layers of a model run fused: a Conv2d whose only reader is the next node, a ReLU."""


def relu_fusions(nodes):
    """Indices i of `nodes` ((name, layer, inputs) tuples in run order) whose layer is a Conv2d read by
    exactly one node, the next, a ReLU: they run as one fused conv + bias + ReLU pass (bit for bit the
    unfused result; one pass over the output instead of three). A node that is the model's output, or feeds
    anything else, is left alone."""
    from .layers.activation import ReLU
    from .layers.conv import Conv2d
    uses = {}
    for _, _, ins in nodes:
        for j in ins:
            uses[j] = uses.get(j, 0) + 1
    return {i for i in range(len(nodes) - 1) if type(nodes[i][1]) is Conv2d and uses.get(i) == 1
            and type(nodes[i + 1][1]) is ReLU and nodes[i + 1][2] == [i]}
