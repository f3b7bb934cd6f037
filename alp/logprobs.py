"""Token log-probabilities under the distribution the rollout actually sampled from.

One convention for the whole kit, used by the inference backend to sample (`sampling_distribution`)
and by the learner to score (`sampling_logprobs`, `chosen_logprobs`), so rollout and update agree:

    1. x = logits / temperature                        (temperature > 0; greedy is not a distribution)
    2. top_k > 0: keep tokens whose x >= the k-th largest x (ties at the boundary are all kept, as in
       HF's TopKLogitsWarper), renormalise.
    3. top_p < 1: sort the kept probabilities in descending order (stable sort: equal probabilities keep
       ascending token-id order), keep every token whose *exclusive* cumulative probability (the mass of
       the tokens sorted before it) is < top_p. That is the smallest prefix whose cumulative probability
       is >= top_p; the argmax (exclusive cumsum 0) is always kept. Renormalise.
    4. tokens outside the kept set get log-probability -inf.

Shapes: B sequences, T tokens, V vocabulary. Logprob tensors follow the TrainBatch convention:
out[:, t] = log p(token_ids[:, t] | token_ids[:, :t]), scored from logits[:, t - 1]; out[:, 0] = 0.

Two scoring paths: `sampling_logprobs` (plain: materialises log-softmax over V, autograd does the rest)
and `chosen_logprobs` (memory-lean: a custom autograd function that keeps only the logits it was given
and a [B, T] log-normaliser, computes softmax chunk by chunk over T in forward and backward, and returns
the entropy of the same distribution from the same pass). Tests check that they agree in value and
gradient. The lean path handles temperature only; with top_k/top_p it falls back to the plain path per
chunk. `token_logprobs` picks between them (logprobs and entropy with gradients, what the learner trains
on) and `score` is the one no-grad scorer of a whole TrainBatch (pi_old, the reference model, mismatch
diagnostics, the drift lab).
"""

from __future__ import annotations

import torch

from alp.batch import TrainBatch, pack_micro_batches

__all__ = [
    "sampling_distribution",
    "sampling_logprobs",
    "chosen_logprobs",
    "entropy_from_logits",
    "token_logprobs",
    "score",
]


def _check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    if not temperature > 0:
        raise ValueError(
            f"temperature={temperature}: must be > 0 (greedy decoding has no sampling distribution; "
            "score greedy rollouts with temperature=1.0 or sample with a small positive temperature)"
        )
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: must be in (0, 1]; use 1.0 to switch it off")
    if top_k < 0:
        raise ValueError(f"top_k={top_k}: must be >= 0; use 0 to switch it off")


def sampling_distribution(
    logits: torch.Tensor, *, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """Log-probabilities over the vocabulary of the distribution sampled from (see module docstring).

    logits: [..., V] -> [..., V] float32 (or float64 if given), -inf outside the top-k/top-p set.
    """
    _check_sampling(temperature, top_p, top_k)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(dtype) / temperature  # [..., V]
    V = x.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(x.detach(), top_k, dim=-1).values[..., -1:]  # [..., 1]
        x = x.masked_fill(x.detach() < kth, float("-inf"))  # [..., V]
    logp = torch.log_softmax(x, dim=-1)  # [..., V]
    if top_p < 1.0:
        p_sorted, idx = torch.sort(logp.detach().exp(), dim=-1, descending=True, stable=True)  # [..., V]
        mass_before = torch.cumsum(p_sorted, dim=-1) - p_sorted  # [..., V] exclusive cumsum
        drop_sorted = mass_before >= top_p  # [..., V]
        drop_sorted[..., 0] = False  # the argmax is always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)  # [..., V] back to vocab order
        logp = torch.log_softmax(x.masked_fill(drop, float("-inf")), dim=-1)  # [..., V]
    return logp


def _shift_targets(token_ids: torch.Tensor) -> torch.Tensor:
    return token_ids[:, 1:].unsqueeze(-1)  # [B, T-1, 1]


def sampling_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> torch.Tensor:
    """Plain path: log p(token_ids[:, t] | < t) under the sampled distribution; out[:, 0] = 0.

    logits: [B, T, V] (logits[:, t] predicts token t + 1), token_ids: [B, T] -> [B, T].
    """
    logp = sampling_distribution(
        logits[:, :-1], temperature=temperature, top_p=top_p, top_k=top_k
    )  # [B, T-1, V]
    chosen = logp.gather(-1, _shift_targets(token_ids)).squeeze(-1)  # [B, T-1]
    return torch.nn.functional.pad(chosen, (1, 0))  # [B, T]


def entropy_from_logits(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Plain entropy of softmax(logits / temperature) at every position: [B, T, V] -> [B, T]."""
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logp = torch.log_softmax(logits.to(dtype) / temperature, dim=-1)  # [B, T, V]
    return -(logp.exp() * logp).sum(-1)  # [B, T]


class _ChosenLogprobs(torch.autograd.Function):
    """Lean log-softmax gather + entropy at a temperature, chunked over T in forward and backward.

    Saves only the input logits (alive anyway as the model output) and [B, T] statistics, so no
    [B, T, V] log-softmax is stored for backward.
    """

    @staticmethod
    def forward(ctx, logits, token_ids, temperature, chunk):
        B, T, V = logits.shape
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        out = logits.new_zeros(B, T, dtype=dtype)  # [B, T]
        ent = logits.new_zeros(B, T, dtype=dtype)  # [B, T]
        lse = logits.new_zeros(B, T, dtype=dtype)  # [B, T]
        mean_x = logits.new_zeros(B, T, dtype=dtype)  # [B, T] E_p[x], for the entropy gradient
        for s in range(0, T - 1, chunk):
            e = min(s + chunk, T - 1)
            x = logits[:, s:e].to(dtype) / temperature  # [B, c, V]
            z = torch.logsumexp(x, dim=-1)  # [B, c]
            p = torch.exp(x - z.unsqueeze(-1))  # [B, c, V]
            ex = (p * x).sum(-1)  # [B, c]
            tgt = token_ids[:, s + 1 : e + 1].unsqueeze(-1)  # [B, c, 1]
            out[:, s + 1 : e + 1] = x.gather(-1, tgt).squeeze(-1) - z
            ent[:, s + 1 : e + 1] = z - ex
            lse[:, s:e] = z
            mean_x[:, s:e] = ex
        ctx.save_for_backward(logits, token_ids, lse, mean_x)
        ctx.temperature = temperature
        ctx.chunk = chunk
        ctx.set_materialize_grads(False)  # an unused output (often the entropy) costs no backward work
        return out, ent

    @staticmethod
    def backward(ctx, g_out, g_ent):
        logits, token_ids, lse, mean_x = ctx.saved_tensors
        if g_out is None and g_ent is None:
            return None, None, None, None
        temperature, chunk = ctx.temperature, ctx.chunk
        B, T, V = logits.shape
        grad = torch.zeros_like(logits)  # [B, T, V]
        dtype = lse.dtype
        for s in range(0, T - 1, chunk):
            e = min(s + chunk, T - 1)
            x = logits[:, s:e].to(dtype) / temperature  # [B, c, V]
            p = torch.exp(x - lse[:, s:e].unsqueeze(-1))  # [B, c, V]
            # d logp_y / dx = onehot_y - p ;  d H / dx = -p * (x - E_p[x])
            if g_out is not None:
                go = g_out[:, s + 1 : e + 1].to(dtype).unsqueeze(-1)  # [B, c, 1]
                gx = -p * go  # [B, c, V]
                gx.scatter_add_(-1, token_ids[:, s + 1 : e + 1].unsqueeze(-1), go)
            else:
                gx = torch.zeros_like(p)  # [B, c, V]
            if g_ent is not None:
                ge = g_ent[:, s + 1 : e + 1].to(dtype).unsqueeze(-1)  # [B, c, 1]
                gx -= p * ge * (x - mean_x[:, s:e].unsqueeze(-1))  # [B, c, V]
            grad[:, s:e] = (gx / temperature).to(grad.dtype)
        return grad, None, None, None


def chosen_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    chunk_tokens: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory-lean (logprobs [B, T], entropy [B, T]) with the same convention as `sampling_logprobs`.

    entropy[:, t] is the entropy of the temperature-scaled (and top-k/top-p truncated) distribution that
    token t was drawn from; entropy[:, 0] = 0. Both outputs carry gradients.
    chunk_tokens: positions processed at once (bounds the transient [B, chunk, V] buffers).
    """
    _check_sampling(temperature, top_p, top_k)
    B, T, V = logits.shape
    if T < 2:
        z = logits.new_zeros(B, T, dtype=torch.float32)
        return z, z.clone()
    if top_p < 1.0 or 0 < top_k < V:
        lps, ents = [], []
        for s in range(0, T - 1, chunk_tokens):
            e = min(s + chunk_tokens, T - 1)
            logp = sampling_distribution(logits[:, s:e], temperature=temperature, top_p=top_p, top_k=top_k)
            lps.append(logp.gather(-1, token_ids[:, s + 1 : e + 1].unsqueeze(-1)).squeeze(-1))  # [B, c]
            p = logp.exp()  # [B, c, V]
            ents.append(-(p * logp.masked_fill(p == 0, 0.0)).sum(-1))  # [B, c]
        pad = logits.new_zeros(B, 1, dtype=lps[0].dtype)
        return torch.cat([pad, *lps], dim=1), torch.cat([pad, *ents], dim=1)
    out, ent = _ChosenLogprobs.apply(logits, token_ids, float(temperature), int(chunk_tokens))
    return out, ent


def token_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    chunk_tokens: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprobs [B, T], entropy [B, T]) under the sampling distribution, with gradients.

    chunk_tokens > 0: the lean path (`chosen_logprobs`); 0: the plain path (`sampling_logprobs`, and the
    entropy of the same truncated distribution). Both give the same values and gradients.
    """
    kw = {"temperature": temperature, "top_p": top_p, "top_k": top_k}
    if chunk_tokens > 0:
        return chosen_logprobs(logits, token_ids, chunk_tokens=chunk_tokens, **kw)
    logp = sampling_logprobs(logits, token_ids, **kw)  # [B, T]
    dist = sampling_distribution(logits[:, :-1], **kw)  # [B, T-1, V]
    ent = -(dist.exp() * dist.masked_fill(torch.isinf(dist), 0.0)).sum(-1)  # [B, T-1]
    return logp, torch.nn.functional.pad(ent, (1, 0))  # [B, T], [B, T]


@torch.no_grad()
def score(
    model: torch.nn.Module,
    batch: TrainBatch,
    *,
    micro_batch_tokens: int = 8192,
    chunk_tokens: int = 0,
    forwards: int | None = None,
) -> torch.Tensor:
    """log p(token | prefix) [B, T] of every token of `batch` under its sampling settings; no grad.

    The model is called as it is (no perturbation is installed here, and its train/eval mode is the
    caller's). Rows are packed into micro-batches of at most `micro_batch_tokens` padded tokens
    (`pack_micro_batches`; 1 scores every sequence alone); entries beyond a row's length are 0.
    `forwards`: run this many forward passes at least (empty ones after the real ones), for a sharded model
    whose forward is a collective that every rank must call as often (alp.distributed).
    """
    assert batch.lengths is not None
    device = next(model.parameters()).device
    out = torch.zeros(batch.token_ids.shape, dtype=torch.float32)  # [B, T]
    rows = torch.arange(len(batch))
    micro = pack_micro_batches(batch.lengths, rows, micro_batch_tokens)
    for _ in range(len(micro), forwards or 0):
        model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device), use_cache=False)
    for mb in micro:
        width = int(batch.lengths[mb].max())
        ids = batch.token_ids[mb, :width].to(device)  # [b, T]
        logits = model(input_ids=ids, use_cache=False).logits  # [b, T, V]
        logp, _ = token_logprobs(logits, ids, temperature=batch.temperature, top_p=batch.top_p,
                                 top_k=batch.top_k, chunk_tokens=chunk_tokens)
        real = torch.arange(width) < batch.lengths[mb].cpu().unsqueeze(1)  # [b, T] False on padding
        out[mb, :width] = torch.where(real, logp.float().cpu(), 0.0)
    return out.to(batch.token_ids.device)
