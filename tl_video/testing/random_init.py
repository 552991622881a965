"""Random weights large enough that activations and logits are O(1), for parity tests."""

from __future__ import annotations

from torch import nn


def widen_random_weights(model: nn.Module) -> None:
    """Redraw weights so activations and logits are O(1): random init is too small to show differences."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            module.weight.data.normal_(0.0, module.weight[0].numel() ** -0.5)
            if module.bias is not None:
                module.bias.data.normal_(0.0, 0.2)
        elif "Norm" in type(module).__name__ and getattr(module, "weight", None) is not None:
            module.weight.data.uniform_(0.5, 1.5)
            if getattr(module, "bias", None) is not None:
                module.bias.data.normal_(0.0, 0.2)
    input_embeddings, output_embeddings = model.get_input_embeddings(), model.get_output_embeddings()
    if output_embeddings is not None and output_embeddings.weight is input_embeddings.weight:
        input_embeddings.weight.data.normal_(0.0, input_embeddings.weight.shape[-1] ** -0.5)


def widen_matrices(model: nn.Module) -> None:
    """The LLaVA-NeXT-Video builder's older variant: every matrix but the embeddings drawn with std
    1/sqrt(fan_in), norm weights uniform in [0.5, 1.5], biases kept (its checkpoints' measured
    tolerances were taken with these weights)."""
    for name, parameter in model.named_parameters():
        if parameter.ndim >= 2 and "embed" not in name:
            parameter.data.normal_(0.0, 1.0 / parameter.shape[-1] ** 0.5)
        elif "norm" in name and parameter.ndim == 1 and name.endswith("weight"):
            parameter.data.uniform_(0.5, 1.5)
