"""X-Cross on tiny models: stream equality with peft, Eq. 5 by hand, gradients, sizes, ablations."""

import pytest
import torch

from xcross_lib.data.encoding import PromptEncoder
from xcross_lib.models import Scorer, ScorerConfig, load_backbone
from xcross_lib.models.xcross import Integrator, XCross, XCrossConfig

pytestmark = pytest.mark.unit

TITLES = {0: "cordless drill kit", 1: "wood glue", 2: "tape measure 25 ft", 3: "led bulb", 4: "socket set"}


def sources(n, kind="tiny-bert", encoding="pair"):
    """n source scorers with different, non-trivial adapters over the same base weights."""
    out = []
    for s in range(n):
        backbone = load_backbone(kind, seed=0)
        torch.manual_seed(100 + s)
        model = Scorer(backbone, ScorerConfig(encoding=encoding, pooling="mean"))
        with torch.no_grad():
            for k, p in model.named_parameters():
                if "lora_B" in k:
                    p.normal_(0, 0.3)
        out.append(model.eval())
    return out


def batch(encoding="pair"):
    enc = PromptEncoder(load_backbone("tiny-bert").tokenizer, TITLES, 48, encoding)
    return enc.batch([[0, 1], [2, 3, 1]], [[3, 4], [0, 4]], [0, 1])


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-deberta"])
@pytest.mark.parametrize("point", ["layer", "projection"])
def test_streams_equal_the_source_models_when_lambdas_are_zero(kind, point):
    srcs = sources(3, kind)
    model = XCross(load_backbone(kind, seed=0), srcs, XCrossConfig(lambda1=0.0, lambda2=0.0, integration_point=point)).eval()
    with torch.no_grad():  # W is irrelevant with both lambdas at zero
        for p in model.integrators.parameters():
            p.normal_()
    b = batch()
    streams = model.stream_states(b.input_ids, b.attention_mask, b.token_type_ids)
    for i, src in enumerate(srcs):
        alone = src.encoder(**b.model_inputs()).last_hidden_state
        torch.testing.assert_close(streams[i], alone, atol=1e-5, rtol=0)


def test_untrained_xcross_is_the_average_of_the_streams():
    srcs = sources(2)
    model = XCross(load_backbone("tiny-bert", seed=0), srcs).eval()  # W = 0: no mixing
    b = batch()
    alone = [s.encoder(**b.model_inputs()).last_hidden_state for s in srcs]
    torch.testing.assert_close(model.encode(b.input_ids, b.attention_mask, b.token_type_ids),
                               (alone[0] + alone[1]) / 2, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [2, 3])
def test_equation_5_by_hand(n):
    torch.manual_seed(n)
    d, B, T = 3, 2, 2
    integ = Integrator(n, d)
    with torch.no_grad():
        integ.scaling.weight.normal_()
    h = torch.randn(n, B, T, d)
    l1, l2 = 0.7, -0.3
    with torch.no_grad():
        refined, alpha, beta = integ(h, l1, l2)
    W = integ.scaling.weight.detach()  # (2n(n-1), n*d)
    pairs = [(i, j) for i in range(n) for j in range(n) if j != i]
    for b in range(B):
        for t in range(T):
            c = torch.cat([h[i, b, t] for i in range(n)])  # (n*d,)
            z = W @ c  # (2n(n-1),)
            for i in range(n):
                expected = h[i, b, t].clone()
                for j in range(n):
                    if j == i:
                        continue
                    k = pairs.index((i, j))
                    a_ij, b_ij = z[k], z[len(pairs) + k]
                    expected += l1 * a_ij * h[j, b, t] + l2 * b_ij * (h[i, b, t] - h[j, b, t])
                    assert alpha[i, [x for x in range(n) if x != i].index(j), b, t] == pytest.approx(a_ij.item(), abs=1e-6)
                torch.testing.assert_close(refined[i, b, t], expected, atol=1e-5, rtol=0)


def test_gradients_reach_the_integrator_and_weights_only():
    model = XCross(load_backbone("tiny-bert", seed=0), sources(2), XCrossConfig(top_k_layers=2))
    b = batch()
    with torch.no_grad():  # W != 0 so that every factor carries gradient to the layers below
        for p in model.integrators.parameters():
            p.normal_(0, 0.01)
    scores = model(**b.model_inputs())
    torch.nn.functional.cross_entropy(scores.view(2, 2), b.target_index).backward()
    for name, p in model.named_parameters():
        if name == "head.score.bias":  # a shift of every score leaves the softmax as it is: gradient 0
            assert p.grad is not None
        elif name.startswith(("integrators.", "stream_weights", "head.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert len(model.integrators) == 2 and model.integrated_layers == [1, 2]
    stacked = [m for m in model.encoder.modules() if hasattr(m, "lora_A") and isinstance(m.lora_A, torch.Tensor)]
    assert stacked and all(m.lora_A.grad is None for m in stacked)


def test_parameter_counts_for_deberta_v3_base_sizes():
    # d = 768, n = 2: W is (2 * 768) x (2 * 2 * 1) = 6,144 weights per layer, a quarter of one rank-16
    # LoRA pair (2 x 16 x 768 = 24,576)
    integ = Integrator(2, 768)
    assert sum(p.numel() for p in integ.parameters()) == 6144 == (2 * 16 * 768) // 4
    assert sum(p.numel() for p in Integrator(3, 768).parameters()) == 3 * 768 * 12
    counts = XCross(load_backbone("tiny-bert", seed=0), sources(2), XCrossConfig(top_k_layers=2)).parameter_counts()
    assert counts["integrator_per_point"] == 2 * 32 * 4 and counts["integrators"] == 2 * 256
    assert counts["lora_adapter_one_source"] == 3 * 2 * (16 * 32 + 32 * 16)  # 3 layers x (query, value)
    assert counts["trainable"] == counts["integrators"] + counts["stream_weights"] + counts["head"]
    plain = XCross(load_backbone("tiny-bert", seed=0), sources(2), XCrossConfig(ablation="-layers")).parameter_counts()
    assert plain["integrators"] == 0 and plain["trainable"] == counts["stream_weights"] + counts["head"]


@pytest.mark.parametrize("ablation, silent", [("-interactions", "beta"), ("-experts", "alpha"), ("-layers", "both")])
def test_ablations_switch_off_exactly_their_terms(ablation, silent):
    config = XCrossConfig(ablation=ablation, lambda1=0.5, lambda2=0.5)
    expected = {"-interactions": (0.5, 0.0), "-experts": (0.0, 0.5), "-layers": (0.0, 0.0)}[ablation]
    assert (config.lambda1, config.lambda2) == expected
    n, d = 2, 4
    integ = Integrator(n, d)
    h = torch.randn(n, 1, 3, d)
    pairs = n * (n - 1)
    with torch.no_grad():
        integ.scaling.weight.normal_()
    base, _, _ = integ(h, config.lambda1, config.lambda2)
    for part, rows in (("alpha", slice(0, pairs)), ("beta", slice(pairs, 2 * pairs))):
        with torch.no_grad():
            integ.scaling.weight[rows] += 1.0  # change only this part of W
        out, _, _ = integ(h, config.lambda1, config.lambda2)
        with torch.no_grad():
            integ.scaling.weight[rows] -= 1.0
        unchanged = torch.allclose(out, base)
        assert unchanged == (silent in (part, "both")), (ablation, part)


def test_alpha_beta_recorded_per_example():
    model = XCross(load_backbone("tiny-bert", seed=0), sources(3), XCrossConfig(top_k_layers=1)).eval()
    model.record = True
    b = batch()
    model(**b.model_inputs())
    (alpha, beta), = model.recorded[-1].values()
    assert alpha.shape == (4, 3, 2) and beta.shape == (4, 3, 2)  # (prompts, n, n-1)
    assert torch.all(alpha == 0)  # W starts at zero


def test_separate_encoding_sources_integrate_too():
    model = XCross(load_backbone("tiny-bert", seed=0), sources(2, encoding="separate"))
    b = batch("separate")
    assert model(**b.model_inputs()).shape == (4,)
    with pytest.raises(ValueError, match="share one encoding"):
        XCross(load_backbone("tiny-bert", seed=0), sources(1) + sources(1, encoding="separate"))


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-deberta"])
def test_sequential_reference_equals_batched_streams_with_integration(kind):
    """The n peft models run one stream at a time per layer, with the same (non-zero) integrators,
    give the batched streams' states: the benchmark compares like with like."""
    from xcross_lib.models.xcross.sequential import sequential_stream_states

    srcs = sources(3, kind)
    model = XCross(load_backbone(kind, seed=0), srcs, XCrossConfig(top_k_layers=2)).eval()
    with torch.no_grad():
        for integrator in model.integrators.values():
            integrator.scaling.weight.normal_(0, 0.05)
    inputs = {k: v for k, v in batch().model_inputs().items() if k != "token_type_ids" or kind == "tiny-bert"}
    with torch.no_grad():
        batched = model.stream_states(**inputs)
        sequential = sequential_stream_states(model, srcs, **inputs)
        plain = torch.stack([s.encoder(**inputs).last_hidden_state for s in srcs])
    assert torch.allclose(batched, sequential, atol=1e-5)
    assert not torch.allclose(batched, plain, atol=1e-3)  # the integrators did act


def test_deberta_xcross_runs_under_bf16_autocast():
    """The stacked adapters' deltas keep autocast's dtype: DeBERTa's attention mask fill failed
    when a float32 delta turned its queries back to float32."""
    model = XCross(load_backbone("tiny-deberta", seed=0), sources(2, "tiny-deberta"), XCrossConfig()).eval()
    inputs = {k: v for k, v in batch().model_inputs().items() if k != "token_type_ids"}
    with torch.no_grad():
        exact = model(**inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**inputs).float()
    assert torch.allclose(exact, low, atol=0.05 * exact.abs().max().item() + 1e-3)
