"""GradCAM as a plain function (Selvaraju et al., 2017): a few lines rather than pytorch-grad-cam's object per model
and layer, so the contract the callbacks rely on (the model left exactly as found) is explicit and tested."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eva_lightning.core.errors import EvaError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every module of ``model`` in eval mode inside the block; afterwards each gets its own mode back."""
    # not model.train() afterwards: a module frozen in eval mode on purpose must stay so
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def gradcam(model: nn.Module, images: torch.Tensor, target_layer: str,
            class_idx: torch.Tensor | None = None) -> torch.Tensor:
    """GradCAM maps (N, H, W) in [0, 1] (a flat map: zeros) at ``target_layer`` (``net.layer3``), for ``class_idx``
    (default: predicted); in eval mode (no batch dependence), leaving modes, weights, buffers and ``.grad`` alone."""
    model = getattr(model, "_orig_mod", model)  # torch.compile(model): the layer names are the eager model's
    try:
        layer = model.get_submodule(target_layer)
    except AttributeError as exc:
        names = [n for n, _ in model.named_modules() if n][:20]
        raise EvaError(f"GradCAM target layer {target_layer!r} not found in the model; some layer names: {names}") from exc
    store: dict[str, torch.Tensor] = {}

    def keep_activation(_module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise EvaError(f"GradCAM target layer {target_layer!r} must return one tensor, got {type(output).__name__}")
        if not output.requires_grad:  # frozen weights up to here: make the activation a leaf we can differentiate
            output = output.detach().requires_grad_(True)
        store["act"] = output
        return output

    handle = layer.register_forward_hook(keep_activation)
    try:
        # callbacks run in inference_mode; a compiled net's hooked activation is not the logits' source: eager
        with (eval_mode(model), torch.inference_mode(False), torch.enable_grad(),
              torch.compiler.set_stance("force_eager")):
            x = images.detach().clone()
            logits = model(x)
            target = logits.argmax(dim=1) if class_idx is None else (
                torch.as_tensor(class_idx, device=logits.device).detach().clone().long().reshape(-1))
            score = logits.gather(1, target[:, None]).sum()  # per-image scores are independent, so the sum's grad is per image
            act = store["act"]
            (grad,) = torch.autograd.grad(score, act)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * act).sum(dim=1, keepdim=True)).detach()
    finally:
        handle.remove()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - lo
    return torch.where(span > 0, (cam - lo) / span.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))


def overlay(image: np.ndarray | torch.Tensor, cam: np.ndarray | torch.Tensor, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend an (H, W) heat map in [0, 1] (matplotlib ``colormap``, weight ``alpha``) over one image (CHW/HWC/HW,
    uint8 or float in [0, 1]): (H, W, 3) uint8 RGB."""
    from matplotlib import colormaps

    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 2:
        img = img[..., None]  # (H, W, 1): a grey image broadcasts against the heat map's RGB
    img = np.clip(img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32), 0.0, 1.0)
    heat = np.asarray(cam.detach().cpu() if isinstance(cam, torch.Tensor) else cam, dtype=np.float32)
    rgb = colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3]
    return (np.clip((1 - alpha) * img + alpha * rgb, 0.0, 1.0) * 255).round().astype(np.uint8)
