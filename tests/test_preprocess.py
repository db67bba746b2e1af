import numpy as np
import torch

from ddlnl.data.preprocess import Preprocessor, to_float_tensor


def images(n=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_normalize_gives_zero_mean_unit_std():
    x = images()
    p = Preprocessor("normalize").fit(x)
    y = p.apply_uint8(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    assert torch.allclose(p.inverse(y), to_float_tensor(x), atol=1e-5)


def test_zca_matches_kornia_and_inverts():
    import kornia

    x = images(300)
    xf = to_float_tensor(x)
    p = Preprocessor("zca", zca_eps=0.1).fit(x)
    ref = kornia.enhance.ZCAWhitening(eps=0.1).fit(xf)
    assert torch.allclose(p(xf), ref(xf), atol=1e-4)
    assert torch.allclose(p.inverse(p(xf)), xf, atol=1e-3)


def test_state_round_trip():
    x = images()
    p = Preprocessor("zca").fit(x)
    q = Preprocessor.from_state(p.meta(), p.state_tensors())
    xf = to_float_tensor(x[:5])
    assert q.kind == "zca" and torch.equal(p(xf), q(xf))
