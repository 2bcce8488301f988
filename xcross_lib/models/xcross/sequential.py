"""X-Cross's streams computed the plain way: n peft source models run layer by layer, one after
another, with the same integrators between layers. A reference for tests and for the benchmark of
the batched streams (same arithmetic, n separate calls per layer instead of one)."""

from __future__ import annotations

import torch

from .model import XCross


class _Captured(Exception):
    pass


def _layer_inputs(encoder, input_ids, attention_mask, token_type_ids=None):
    """(embeddings, the arguments the encoder passes to every layer besides the hidden states)."""
    captured = {}

    def grab(module, args, kwargs):
        captured["args"], captured["kwargs"] = args, kwargs
        raise _Captured

    handle = encoder.encoder.layer[0].register_forward_pre_hook(grab, with_kwargs=True)
    kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
    try:
        encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    except _Captured:
        pass
    finally:
        handle.remove()
    args, kw = captured["args"], dict(captured["kwargs"])
    hidden = args[0] if args else kw.pop("hidden_states")
    return hidden, args[1:], kw


def sequential_stream_states(xcross: XCross, sources, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
    """(n, B, T, d) last hidden states of the integrated streams, from the n source models' own
    peft encoders run one stream at a time per layer, with xcross's integrators (layer outputs)."""
    if xcross.config.integration_point != "layer":
        raise ValueError("the sequential reference integrates at layer outputs only")
    encoders = [s.encoder.get_base_model() for s in sources]
    hidden, rest, kwargs = zip(*(_layer_inputs(e, input_ids, attention_mask, token_type_ids) for e in encoders))
    h = list(hidden)
    for layer in range(len(encoders[0].encoder.layer)):
        for s, encoder in enumerate(encoders):
            out = encoder.encoder.layer[layer](h[s], *rest[s], **kwargs[s])
            h[s] = out[0] if isinstance(out, tuple) else out
        key = f"encoder_layer_{layer}"
        if key in xcross.integrators:
            refined, _, _ = xcross.integrators[key](torch.stack(h), xcross.config.lambda1, xcross.config.lambda2)
            h = list(refined)
    return torch.stack(h)
