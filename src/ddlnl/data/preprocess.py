"""Image preprocessing fitted on the (noisy) training images: normalisation or ZCA.

The fitted state travels with every output (SyntheticSet files keep it), because a
distilled set made in ZCA space is meaningless without the transform that made it.
"""

from __future__ import annotations

import numpy as np
import torch

from ddlnl.errors import check_choice

PREPROCESS_KINDS = ("normalize", "zca", "none")


def to_float_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float32 (N, 3, H, W) in [0, 1]."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = np.array(images)  # read-only arrays (cached loads) must not be shared with torch
    x = torch.as_tensor(images)
    return x.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


class Preprocessor:
    """Maps [0, 1] images to network inputs and back.

    ``normalize``: per-channel mean/std of the training images.
    ``zca``: kornia's ``ZCAWhitening(eps=zca_eps)`` fitted on the training images in [0, 1],
    as in MTT/DATM (eps 0.1 added to the covariance eigenvalues).
    """

    def __init__(self, kind: str = "normalize", *, zca_eps: float = 0.1):
        self.kind = check_choice("preprocess", kind, PREPROCESS_KINDS)
        self.zca_eps = float(zca_eps)
        self.tensors: dict[str, torch.Tensor] = {}

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, images: np.ndarray | torch.Tensor, *, chunk: int = 10000) -> "Preprocessor":
        x = images if isinstance(images, torch.Tensor) and images.is_floating_point() else to_float_tensor(images)
        if self.kind == "normalize":
            n = x.shape[0]
            s = torch.zeros(3, dtype=torch.float64)
            s2 = torch.zeros(3, dtype=torch.float64)
            for i in range(0, n, chunk):
                b = x[i : i + chunk].double()
                s += b.sum(dim=(0, 2, 3))
                s2 += (b * b).sum(dim=(0, 2, 3))
            count = n * x.shape[2] * x.shape[3]
            mean = s / count
            std = (s2 / count - mean * mean).clamp_min(1e-12).sqrt()
            self.tensors = {"mean": mean.float(), "std": std.float()}
        elif self.kind == "zca":
            import kornia

            zca = kornia.enhance.ZCAWhitening(eps=self.zca_eps, compute_inv=False)
            zca.fit(x)
            self.tensors = {
                "mean": zca.mean_vector.detach().reshape(-1).float().contiguous(),
                "transform": zca.transform_matrix.detach().float().contiguous(),
            }
        return self

    # -- applying --------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] float (N, 3, H, W) → network input (same shape)."""
        if self.kind == "none":
            return x
        if self.kind == "normalize":
            mean = self.tensors["mean"].to(x).view(1, -1, 1, 1)
            std = self.tensors["std"].to(x).view(1, -1, 1, 1)
            return (x - mean) / std
        flat = x.reshape(x.shape[0], -1) - self.tensors["mean"].to(x)
        return (flat @ self.tensors["transform"].to(x)).reshape(x.shape)

    def apply_uint8(self, images: np.ndarray, *, chunk: int = 10000) -> torch.Tensor:
        """uint8 (N, H, W, 3) → preprocessed float (N, 3, H, W), in chunks to bound memory."""
        parts = [self(to_float_tensor(images[i : i + chunk])) for i in range(0, len(images), chunk)]
        return torch.cat(parts) if parts else torch.empty(0, 3, images.shape[1], images.shape[2])

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Network input → [0, 1]-scale images (for viewing synthetic sets)."""
        if self.kind == "none":
            return x
        if self.kind == "normalize":
            mean = self.tensors["mean"].to(x).view(1, -1, 1, 1)
            std = self.tensors["std"].to(x).view(1, -1, 1, 1)
            return x * std + mean
        T = self.tensors["transform"].to(torch.float64)
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        out = torch.linalg.solve(T, flat.T).T + self.tensors["mean"].to(torch.float64)
        return out.reshape(x.shape).to(x.dtype)

    # -- persistence -----------------------------------------------------------------------
    def meta(self) -> dict:
        return {"kind": self.kind, "zca_eps": self.zca_eps}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"preprocess.{k}": v for k, v in self.tensors.items()}

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> "Preprocessor":
        p = cls(meta.get("kind", "none"), zca_eps=meta.get("zca_eps", 0.1))
        p.tensors = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("preprocess.")}
        need = {"none": (), "normalize": ("mean", "std"), "zca": ("mean", "transform")}[p.kind]
        missing = [k for k in need if k not in p.tensors]
        if missing:
            raise ValueError(f"{p.kind} preprocessing without its {', '.join('preprocess.' + k for k in missing)} tensor(s)")
        if p.kind == "zca":
            d = p.tensors["mean"].numel()
            if p.tensors["transform"].shape != (d, d):
                raise ValueError(f"ZCA transform of shape {tuple(p.tensors['transform'].shape)} for {d} pixel values")
        return p
