"""Weighted sum of named losses, as trainers keep it."""


class LossTracker:
    """Holds the current value of each named loss, its weight, and their weighted total.

    ``"total_loss"`` is appended to ``loss_names`` in place when missing, so a trainer's list of
    loss names gains it too.
    """

    def __init__(self, loss_names):
        if "total_loss" not in loss_names:
            loss_names.append("total_loss")
        self.losses = {key: 0 for key in loss_names}
        self.loss_weights = {key: 1 for key in loss_names}

    def weight_the_losses(self, exclude_loss=("total_loss",)):
        for k in self.losses:
            if k not in exclude_loss:
                self.losses[k] *= self.loss_weights[k]

    def get_total_loss(self, exclude_loss=("total_loss",)):
        self.losses["total_loss"] = sum(v for k, v in self.losses.items() if k not in exclude_loss)

    def set_loss_weights(self, loss_weight_dict):
        for k in self.losses:
            self.loss_weights[k] = loss_weight_dict.get(k, 1.0)

    def update(self, loss_weight_dict):
        self.set_loss_weights(loss_weight_dict)
        self.weight_the_losses()
        self.get_total_loss()
