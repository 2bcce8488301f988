"""The cheap-mask dropout: its keep rate, F.dropout's contract, seeds, and where the models use it."""

import math

import pytest
import torch

from xcross_lib.models import Scorer, load_backbone
from xcross_lib.models.attention import product_attention
from xcross_lib.models.dropout import FastDropout, dropout, keep_mask

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_rate(p):
    torch.manual_seed(0)
    n = 4_000_000
    expected = 1 - round(p * 65536) / 65536
    rate = keep_mask((n,), p).float().mean().item()
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    torch.manual_seed(1)
    quarters = keep_mask((n // 4, 4), p).float().mean(0)  # the four 16-bit lanes of each random word alike
    assert (quarters - expected).abs().max().item() < 4 * math.sqrt(expected * (1 - expected) / (n // 4))


def test_the_contract_of_dropout_and_its_gradient():
    torch.manual_seed(0)
    x = (torch.rand(64, 33) + 0.5).requires_grad_(True)  # no zeros, so a zero output means dropped
    out = dropout(x, 0.25)
    kept = out != 0
    assert 0.6 < kept.float().mean().item() < 0.9
    torch.testing.assert_close(out[kept], x[kept] / 0.75)
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert dropout(x, 0.25, training=False) is x and dropout(x, 0.0) is x
    assert dropout(x, 1.0).abs().sum().item() == 0.0


def test_seeds_reproduce_masks():
    torch.manual_seed(5)
    a = keep_mask((1000,), 0.3)
    torch.manual_seed(5)
    b = keep_mask((1000,), 0.3)
    c = keep_mask((1000,), 0.3)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_attention_weights_dropped_with_the_same_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    torch.manual_seed(7)
    out = product_attention(q, k, v, None, scaling=0.5, dropout=0.5, training=True)
    torch.manual_seed(7)
    weights = torch.softmax(q @ k.transpose(2, 3) * 0.5, dim=-1) * keep_mask((2, 3, 5, 5), 0.5) / 0.5
    torch.testing.assert_close(out, (weights @ v).transpose(1, 2))


def test_models_use_it():
    backbone = load_backbone("tiny-bert")
    model = Scorer(backbone)  # peft's LoRA dropout and the head's are made after the backbone
    kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert kinds == {FastDropout}
    assert {type(m) for m in load_backbone("tiny-deberta").model.modules() if isinstance(m, torch.nn.Dropout)} == {FastDropout}
