"""Whole networks the attention modules were published in, loading their official checkpoints.

``list_models()``, ``create_model(name, num_classes=None, checkpoint=None)``, ``model_info(name)``; every network
key of the official releases is also a ``plugattn.from_official`` name. One file per family.
"""

from ._registry import ModelInfo, create_model, list_models, model_info, read_checkpoint, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "read_checkpoint", "register_model"]

from . import cbam_resnet, danet, mobilenet, resnet, seaformer, sknet  # noqa: E402,F401  (register the families)
