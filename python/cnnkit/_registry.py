"""The layer registry: every Layer subclass by class name, and a layer's config (de)serialisation, which
save/load and the containers rebuild layers through. Imports no layer module."""

_REGISTRY = {}   # class name -> Layer subclass; Layer.__init_subclass__ enters each one as it is defined
# "Layer", "Model", "Sequential", "Graph" -> the built-in class, entered by layer.py and graph.py: for the
# isinstance checks of modules that those classes' own methods call (serialize, state_dict), so that
# these need not import them back
_BASES = {}


def _layer_config(name, layer):
    c = {"name": name, "class": type(layer).__name__, "config": layer.config(),
         "requires_grad": {n: p.requires_grad for n, p in layer._params.items() if not p.requires_grad}}
    if layer.frozen:
        c["frozen"] = True
    return c


def _layer_from_config(c):
    cls = _REGISTRY.get(c["class"])
    if cls is None:
        raise ValueError(f"load: unknown layer class {c['class']!r} (a custom layer must be defined, i.e. its "
                         f"module imported, before loading)")
    layer = cls.from_config(c["config"])
    if not isinstance(layer, _BASES["Model"]):
        layer.name = c.get("name") if c.get("name") and not c["name"].isdigit() else layer.name
    for pn in c.get("requires_grad", {}):
        layer._params[pn].requires_grad = False
    if c.get("frozen"):
        layer.frozen = True
    return layer

