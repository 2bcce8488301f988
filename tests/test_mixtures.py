"""XLoRA-style and MeteoRA-style mixtures of the frozen source adapters, and Pooler + Scorer."""

import pytest
import torch

from xcross_lib.models import load_backbone
from xcross_lib.models.mixtures import AdapterMixture, head_only, top_k_softmax

from test_xcross import batch, sources

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind", ["xlora", "meteora"])
def test_trainable_parameter_counts(kind):
    srcs = sources(2)
    model = AdapterMixture(load_backbone("tiny-bert", seed=0), srcs, kind)
    counts = model.parameter_counts()
    layers, d, n = 3, 32, 2
    # xlora: one classifier d -> L*n (+ bias); meteora: L gates d -> n (+ bias): both L*n*(d+1)
    assert counts["mixing"] == layers * n * (d + 1) == 198
    head = sum(p.numel() for p in srcs[0].head.parameters())
    assert counts["head"] == head and counts["trainable"] == counts["mixing"] + head
    plain = head_only(sources(1)[0])
    assert sum(p.numel() for p in plain.parameters() if p.requires_grad) == head


@pytest.mark.parametrize("kind", ["xlora", "meteora"])
@pytest.mark.parametrize("chosen", [0, 1])
def test_a_one_hot_gate_gives_that_source_alone(kind, chosen):
    srcs = sources(2)
    model = AdapterMixture(load_backbone("tiny-bert", seed=0), srcs, kind).eval()
    with torch.no_grad():
        if kind == "xlora":
            model.classifier.bias.view(-1, 2)[:, chosen] = 60.0  # every layer picks the chosen adapter
        else:
            for gate in model.gates:
                gate.bias[chosen] = 60.0
    inputs = {k: v for k, v in batch().model_inputs().items() if k != "token_type_ids"}
    with torch.no_grad():
        mixed = model.encode(**inputs)
        alone = srcs[chosen].encoder(**inputs).last_hidden_state
        other = srcs[1 - chosen].encoder(**inputs).last_hidden_state
    assert torch.allclose(mixed, alone, atol=1e-5)
    assert not torch.allclose(mixed, other, atol=1e-3)


@pytest.mark.parametrize("kind", ["xlora", "meteora"])
def test_gradients_reach_the_gates_and_head_only(kind):
    model = AdapterMixture(load_backbone("tiny-bert", seed=0), sources(2), kind)
    with torch.no_grad():  # off the zero start, so every gate weight gets a gradient
        for p in (model.classifier.parameters() if kind == "xlora" else model.gates.parameters()):
            p.normal_(0, 0.1)
    model(**batch().model_inputs()).sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert all(m.lora_A.grad is None for m in model.gated.values())


def test_top_k_softmax_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    w = top_k_softmax(logits, 2)
    e = torch.exp(torch.tensor([3.0, 2.0]))
    assert torch.allclose(w, torch.tensor([[0.0, e[0] / e.sum(), e[1] / e.sum()]]))
    assert torch.allclose(top_k_softmax(logits, None), logits.softmax(-1))
