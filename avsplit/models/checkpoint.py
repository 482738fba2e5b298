"""How our trained networks are stored: a dataclass config, the state dict, the class name."""

from __future__ import annotations

from dataclasses import asdict


class CheckpointMixin:
    """``to_checkpoint`` / ``from_checkpoint`` for a ``torch.nn.Module`` built from one dataclass
    config (``self.config``, of type :attr:`config_class`).

    The stored dict is ``{"config": dict, "state_dict": ..., "network": "module:Class"}``, the
    form of the files in ``weights/`` (:func:`avsplit.models.registry.load_network` reads the
    class from ``"network"``).
    """

    config_class: type

    def to_checkpoint(self) -> dict:
        """``{"config": dict, "state_dict": ..., "network": ...}`` as stored in ``weights/``."""
        return {"config": asdict(self.config), "state_dict": self.state_dict(),
                "network": f"{type(self).__module__}:{type(self).__qualname__}"}

    @classmethod
    def from_checkpoint(cls, ckpt: dict):
        """The network of a :meth:`to_checkpoint` dict, in eval mode."""
        model = cls(cls.config_class(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()
