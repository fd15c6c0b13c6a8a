"""The names the method and its command both offer, in a module that imports nothing heavy
(the command's options are built without importing torch)."""

#: similarity functions, the paper's first (``dissect.FUNCTIONS`` holds their code)
SIMILARITIES = ("soft_wpmi", "wpmi", "cos", "cos_cubed", "rank_reorder", "rank_reorder_all")

#: ways to pool a layer's output to one number per neuron and image (``dissect.pool_activations``)
POOLS = ("auto", "mean", "max", "cls")
