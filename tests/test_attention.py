"""The precision-dependent attention: the product path by hand, equal to SDPA, dispatched by dtype."""

import math

import pytest
import torch
import torch.nn.functional as F

from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.models import load_backbone
from xcross_lib.models import attention
from xcross_lib.models.attention import product_attention

pytestmark = pytest.mark.unit


def test_product_attention_by_hand():
    # one example, one head, three tokens of width two; the third token is padding (no key may look at it)
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]).view(1, 1, 3, 2)
    k = torch.tensor([[1.0, 1.0], [2.0, 0.0], [5.0, 5.0]]).view(1, 1, 3, 2)
    v = torch.tensor([[1.0, 10.0], [3.0, 30.0], [100.0, 100.0]]).view(1, 1, 3, 2)
    mask = torch.tensor([True, True, False]).view(1, 1, 1, 3).expand(1, 1, 3, 3)
    out = product_attention(q, k, v, mask, scaling=1 / math.sqrt(2))  # (1, 3, 1, 2)
    for i, (qi, expected_scores) in enumerate([(q[0, 0, 0], (1, 2)), (q[0, 0, 1], (2, 0)), (q[0, 0, 2], (2, 2))]):
        s1, s2 = (x / math.sqrt(2) for x in expected_scores)  # q.k for the two real keys
        w1 = math.exp(s1) / (math.exp(s1) + math.exp(s2))
        expected = [w1 * 1 + (1 - w1) * 3, w1 * 10 + (1 - w1) * 30]
        assert out[0, i, 0].tolist() == pytest.approx(expected, rel=1e-6)


def test_product_attention_equals_sdpa_with_gradients():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False  # the second example has two padding tokens
    ours = product_attention(q, k, v, mask, scaling=0.5)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5).transpose(1, 2)
    torch.testing.assert_close(ours, theirs)
    g_ours = torch.autograd.grad(ours.square().sum(), (q, k, v))
    g_theirs = torch.autograd.grad(theirs.square().sum(), (q, k, v))
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def prompts():
    titles = {0: "cordless drill kit", 1: "wood glue", 2: "tape measure 25 ft", 3: "led bulb"}
    backbone = load_backbone("tiny-bert")
    batch = PromptEncoder(backbone.tokenizer, titles, 48).batch([[0, 1, 2], [3]], [[3, 0], [1, 2]], [0, 1])
    return backbone, batch.model_inputs()


def test_backbones_use_it_and_float32_stays_on_sdpa(monkeypatch):
    backbone, inputs = prompts()
    assert backbone.model.config._attn_implementation == attention.NAME
    assert load_backbone("tiny-deberta").model.config.model_type == "deberta-v2"  # keeps its own attention
    assert inputs["attention_mask"].min() == 0  # the batch has padding, so the mask matters
    model = backbone.model.eval()
    with torch.no_grad():
        ours = model(**inputs).last_hidden_state
        model.set_attn_implementation("sdpa")
        reference = model(**inputs).last_hidden_state
        model.set_attn_implementation("eager")
        eager = model(**inputs).last_hidden_state
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)  # float32: the very same SDPA call
    torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-5)


def test_bf16_on_a_cpu_takes_the_product_path(monkeypatch):
    backbone, inputs = prompts()
    model = backbone.model.eval()
    calls = []
    real = attention.product_attention
    monkeypatch.setattr(attention, "product_attention", lambda *a, **k: calls.append(a[0].dtype) or real(*a, **k))
    with torch.no_grad():
        reference = model(**inputs).last_hidden_state
        assert calls == []
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**inputs).last_hidden_state.float()
    assert calls == [torch.bfloat16] * model.config.num_hidden_layers
    real_tokens = inputs["attention_mask"].bool()
    error = (low - reference)[real_tokens].abs().max().item()
    assert error < 0.05 * reference[real_tokens].abs().max().item()  # bf16 rounding, not another function
