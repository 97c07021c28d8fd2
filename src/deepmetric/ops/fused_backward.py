"""Second derivatives through the library's fused autograd nodes.

The fused nodes (cosine matrix, cosine cross-entropy, proxy-anchor terms, ...) compute their
gradients in closed form from tensors saved without a graph, which is what makes them fast, but
a closed form of that kind cannot itself be differentiated. When a caller asks for a graph of the
gradient (``create_graph=True``: gradient penalties, meta-learning), the node instead re-runs its
plain-torch formula on the saved inputs and differentiates that, so second derivatives are exact;
ordinary backward passes keep the fast closed form.
"""

import torch


def wants_graph_of_gradient():
    """True inside a backward pass that records a graph (``create_graph=True``)."""
    return torch.is_grad_enabled()


def replay_inputs(*pairs):
    """What a node keeps for a replay, per ``(input, equivalent_without_graph)`` pair: the input
    when it needs a gradient (a replay must reach it), else the equivalent (for example its unit
    rows), so that a buffer changed in place after the forward pass does not invalidate it. The
    same input given twice stays one object."""
    kept = []
    for x, equivalent in pairs:
        same = next((k for (y, _), k in zip(pairs, kept) if y is x), None)
        kept.append(same if same is not None else (x if x.requires_grad else equivalent))
    return kept


def replayed_gradients(formula, inputs, grad_outputs):
    """``d formula(*inputs) / d inputs`` contracted with ``grad_outputs``, as a differentiable
    graph. Non-tensor inputs and tensors that need no gradient get ``None``."""
    # A tensor passed in two places (a batch that is its own reference) gets its whole gradient
    # in the first place only: autograd adds up what the node returns for each place.
    wanted = []
    for x in inputs:
        if torch.is_tensor(x) and x.requires_grad and not any(x is w for w in wanted):
            wanted.append(x)
    with torch.enable_grad():
        outputs = formula(*inputs)
        if torch.is_tensor(outputs):
            outputs, grad_outputs = (outputs,), (grad_outputs,)
        grads = torch.autograd.grad(outputs, wanted, grad_outputs, create_graph=True, allow_unused=True)
    result, given = [], []
    for x in inputs:
        index = next((i for i, w in enumerate(wanted) if x is w), None)
        if index is None or index in given:
            result.append(None)
        else:
            given.append(index)
            result.append(grads[index])
    return tuple(result)
