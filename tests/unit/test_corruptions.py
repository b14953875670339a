import pytest
import torch

from aelab.config import validate_params
from aelab.data.corruptions import Compose, GaussianNoise, Masking, SaltAndPepper, build_corruption
from tests.conftest import TINY_PARAMS


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_mean_and_std():
    x = torch.full((2000, 100), 0.5)
    noisy = GaussianNoise(sigma=0.1)(x, _gen())
    noise = noisy - x
    assert noise.mean().item() == pytest.approx(0.0, abs=2e-3)
    assert noise.std().item() == pytest.approx(0.1, rel=0.02)


def test_gaussian_noise_is_clipped_to_unit_range():
    x = torch.rand(500, 50)
    noisy = GaussianNoise(sigma=1.0)(x, _gen())
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert (GaussianNoise(sigma=1.0, clip=False)(x, _gen()) > 1).any()


def test_salt_and_pepper_flips_the_configured_fraction():
    x = torch.full((1000, 100), 0.5)
    out = SaltAndPepper(ratio=0.2)(x, _gen())
    salt, pepper = (out == 1).float().mean().item(), (out == 0).float().mean().item()
    assert salt == pytest.approx(0.1, abs=0.005)
    assert pepper == pytest.approx(0.1, abs=0.005)
    assert ((out == 0.5) | (out == 0) | (out == 1)).all()


def test_masking_zeroes_the_configured_fraction():
    x = torch.rand(1000, 100) + 0.01
    out = Masking(p=0.3)(x, _gen())
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    kept = out != 0
    assert torch.equal(out[kept], x[kept])


def test_same_generator_seed_gives_same_corruption():
    x = torch.rand(64, 10)
    corruption = Compose([GaussianNoise(0.2), Masking(0.5)])
    assert torch.equal(corruption(x, _gen(3)), corruption(x, _gen(3)))
    assert not torch.equal(corruption(x, _gen(3)), corruption(x, _gen(4)))


def test_build_from_config():
    params = validate_params(TINY_PARAMS)
    built = build_corruption(params.variants.denoising.corruption)
    assert isinstance(built, Masking) and built.p == pytest.approx(0.3)
    assert build_corruption([]) is None
