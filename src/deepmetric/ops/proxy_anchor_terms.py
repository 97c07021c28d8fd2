"""The per-proxy log-sum-exp terms of ProxyAnchorLoss from the ``(N, C)`` similarity matrix, in
one pass:

    pos_c = log(1 + sum_{i: y_i = c}  exp(scale * (margin - s_ic) + log_w_i))
    neg_c = log(1 + sum_{i: y_i != c} exp(scale * (margin + s_ic) + log_w_i))

(``scale`` is ``alpha`` for similarities and ``-alpha`` for distances). The positive entries are
gathered as a vector (one per row) instead of masking a dense copy, each term is shifted by its
own maximum, and the backward pass reuses the saved logits:

    d neg_c / d A_ic = exp(A_ic - neg_c)
"""

import torch

from .fused_backward import replayed_gradients, wants_graph_of_gradient


def _plain_proxy_terms(sims, labels, log_weights, scale, margin, num_classes):
    """``proxy_anchor_terms`` from plain torch operations (what second derivatives are taken of)."""
    pos_mask = labels.unsqueeze(1) == torch.arange(num_classes, device=sims.device)
    logits = scale * (margin + torch.where(pos_mask, -sims, sims)) + log_weights.unsqueeze(1)
    zero = torch.zeros(1, num_classes, dtype=sims.dtype, device=sims.device)
    pos = torch.logsumexp(torch.cat([logits.masked_fill(~pos_mask, -torch.inf), zero]), dim=0)
    neg = torch.logsumexp(torch.cat([logits.masked_fill(pos_mask, -torch.inf), zero]), dim=0)
    return pos, neg


class _ProxyTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sims, labels, log_weights, scale, margin, num_classes):
        labels_column = labels.unsqueeze(1)
        neg_logits = torch.add(log_weights.unsqueeze(1) + scale * margin, sims, alpha=scale)
        neg_logits.scatter_(1, labels_column, -float("inf"))
        pos_logits = log_weights + scale * margin - scale * sims.gather(1, labels_column).squeeze(1)
        neg_shift = neg_logits.amax(dim=0).clamp_min(0)
        neg_sum = torch.exp(neg_logits - neg_shift).sum(dim=0)
        neg = neg_shift + torch.log(torch.exp(-neg_shift) + neg_sum)
        pos_shift = torch.zeros(num_classes, dtype=sims.dtype, device=sims.device)
        pos_shift = pos_shift.scatter_reduce(0, labels, pos_logits, reduce="amax")
        pos_sum = torch.zeros_like(pos_shift).index_add_(0, labels, torch.exp(pos_logits - pos_shift[labels]))
        pos = pos_shift + torch.log(torch.exp(-pos_shift) + pos_sum)
        ctx.save_for_backward(neg_logits, pos_logits, labels, neg, pos, sims, log_weights)
        ctx.constants = (scale, margin, num_classes)
        return pos, neg

    @staticmethod
    def backward(ctx, grad_pos, grad_neg):
        neg_logits, pos_logits, labels, neg, pos, sims, log_weights = ctx.saved_tensors
        if wants_graph_of_gradient():
            inputs = (sims, labels, log_weights, *ctx.constants)
            return replayed_gradients(_plain_proxy_terms, inputs, (grad_pos, grad_neg))
        scale = ctx.constants[0]
        # d neg_c / d A_ic = exp(A_ic - neg_c); the positive entries are -inf there, so 0.
        grad = torch.exp(neg_logits - neg).mul_(scale * grad_neg)
        pos_grad = -scale * grad_pos[labels] * torch.exp(pos_logits - pos[labels])
        grad.scatter_(1, labels.unsqueeze(1), pos_grad.unsqueeze(1))
        return grad, None, None, None, None, None


def proxy_anchor_terms(sims, labels, log_weights, scale, margin, num_classes):
    """``(pos, neg)``, each ``(num_classes,)`` (module docstring)."""
    return _ProxyTerms.apply(sims, labels, log_weights, scale, margin, num_classes)
