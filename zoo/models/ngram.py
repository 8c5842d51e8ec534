"""A Kneser-Ney character n-gram: the non-neural line to beat, behind the same interface as the RNNs.

Interpolated modified Kneser-Ney (Chen & Goodman 1998, "An empirical study of smoothing techniques").
For order k and history h (its last k-1 tokens; h' drops the oldest one):

    p_k(w | h) = (c_k(hw) - D_k(c_k(hw)) + gamma_k(h) p_{k-1}(w | h')) / c_k(h)
    gamma_k(h) = sum_w D_k(c_k(hw)) = D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)      p_0(w) = 1 / V

c_k is the raw count at the top order and the continuation count N1+(.hw) (distinct left neighbours)
below it; an unseen history gives p_k = p_{k-1}, so every token, `<unk>` included, keeps p > 0. The
discounts start from Chen & Goodman's estimates and can then be fitted to validation text.

Storage: n-grams are base-V integers (`key(a_1..a_m) = sum a_i V^(m-i)`). Level k keeps its contexts'
keys sorted, and their followers (token, count) side by side, so one `searchsorted` per level finds the
contexts of a whole batch and one gather their followers: no Python loop over tokens. All of it lives in
buffers: `state_dict()` is a flat dict of tensors for safetensors, and a model built from its config alone
has zeroed tables of the right shapes (it predicts the uniform distribution until `fit_ngram` fills them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import JSONConfig


@dataclass
class NGramConfig(JSONConfig):
    """Everything needed to rebuild the model's (empty) buffers; it round-trips through config.json."""
    arch: str = "ngram"
    vocab_size: int = 28
    order: int = 7                                        # tokens per n-gram: the history is order - 1
    contexts: list[int] = field(default_factory=list)     # distinct contexts stored at each order 1..order
    ngrams: list[int] = field(default_factory=list)       # distinct n-grams stored at each order 1..order

    def __post_init__(self):
        if self.arch != "ngram":
            raise ValueError(f"NGramConfig needs arch 'ngram', not {self.arch!r}")
        if self.vocab_size < 2 or self.order < 1:
            raise ValueError("an n-gram model needs vocab_size >= 2 and order >= 1")
        if self.order * math.log2(self.vocab_size) >= 63:
            raise ValueError(f"order {self.order} over {self.vocab_size} tokens overflows the int64 keys")
        self.contexts = list(self.contexts) or [0] * self.order
        self.ngrams = list(self.ngrams) or [0] * self.order
        if len(self.contexts) != self.order or len(self.ngrams) != self.order:
            raise ValueError("contexts and ngrams need one entry per order")


class Level(nn.Module):
    """The counts of one order k: sorted context keys (k-1 tokens), each with its followers."""

    def __init__(self, num_contexts: int, num_ngrams: int):
        super().__init__()
        # Context i (key contexts[i]) is followed by tokens[starts[i]:starts[i+1]], seen counts[...] times.
        self.register_buffer("contexts", torch.zeros(num_contexts, dtype=torch.long))      # (C,) sorted
        self.register_buffer("starts", torch.zeros(num_contexts + 1, dtype=torch.int32))   # (C+1,)
        self.register_buffer("tokens", torch.zeros(num_ngrams, dtype=torch.int32))        # (N,)
        self.register_buffer("counts", torch.zeros(num_ngrams, dtype=torch.int32))        # (N,) c_k(hw)

    def fill(self, keys: torch.Tensor, counts: torch.Tensor, vocab_size: int) -> None:
        """Store sorted n-gram keys with their counts, grouped by context (key // V)."""
        contexts, sizes = torch.unique_consecutive(keys // vocab_size, return_counts=True)
        self.contexts.copy_(contexts)
        self.starts.copy_(F.pad(sizes.cumsum(0), (1, 0)))
        self.tokens.copy_(keys % vocab_size)
        self.counts.copy_(counts)

    def followers(self, keys: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """For context keys (M,): the stored ones (F,) as indices into `keys`, and their followers as flat
        (E,) tensors: which found context each belongs to, the token, the count."""
        C = self.contexts.numel()
        if C == 0:
            empty = keys.new_zeros(0)
            return empty, empty, empty, empty.double()
        i = torch.searchsorted(self.contexts, keys).clamp_(max=C - 1)
        found = (self.contexts[i] == keys).nonzero().squeeze(1)
        i = i[found]
        start, size = self.starts[i].long(), (self.starts[i + 1] - self.starts[i]).long()
        row = torch.repeat_interleave(torch.arange(len(i), device=keys.device), size)
        j = torch.arange(len(row), device=keys.device) + (start - F.pad(size.cumsum(0), (1, 0))[:-1])[row]
        return found, row, self.tokens[j].long(), self.counts[j].double()


class NGramLM(nn.Module):
    """`forward(idx (B, T), state) -> (log-probabilities (B, T, V), state)`, like the recurrent models.

    The state is the last order-1 tokens of each row, shaped (1, B, order-1) like a one-layer hidden
    state (so `zoo.generate` can expand it per sample) and padded with -1 where the text is shorter.
    """

    def __init__(self, config: NGramConfig):
        super().__init__()
        self.config = config
        self.levels = nn.ModuleList(Level(c, n) for c, n in zip(config.contexts, config.ngrams))
        self.register_buffer("discounts", torch.zeros(config.order, 3, dtype=torch.float64))  # D1, D2, D3+

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """No history yet: (1, B, order - 1) of -1, which matches no context."""
        return torch.full((1, batch_size, self.config.order - 1), -1, dtype=torch.long, device=device)

    def forward(self, idx: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log p(next token | history) for every position; the result does not depend on how text is cut."""
        n, V = self.config.order, self.config.vocab_size
        B, T = idx.shape
        idx = idx.long()                                          # compact ids would overflow in the keys
        if state is None:
            state = self.init_state(B, idx.device)
        x = torch.cat([state[0], idx], dim=1)                     # (B, n-1+T): history, then the new tokens
        keys, key = [], idx.new_zeros(B * T)                      # the empty context is key 0
        seen = torch.ones(B * T, dtype=torch.bool, device=idx.device)
        for k in range(1, n + 1):                                 # contexts of k-1 tokens, one older each time
            if k > 1:
                older = x[:, n - k + 1:n - k + 1 + T].reshape(-1)
                key = key + older.clamp(min=0) * V ** (k - 2)
                seen = seen & (older >= 0)
            keys.append(torch.where(seen, key, -1))              # -1: no such history, matches no context
        # Unrolled, the recursion is p = sum_k weight_k a_k + weight_0 / V, with a_k = (c - D(c)) / c(h) on
        # the followers of h, weight_n = 1 and weight_(k-1) = weight_k gamma_k(h) / c(h) (the same if h unseen).
        p = torch.zeros(B * T, V, dtype=torch.float64, device=idx.device)
        weight = torch.ones(B * T, dtype=torch.float64, device=idx.device)
        for level, D, key in zip(reversed(self.levels), self.discounts.flip(0), reversed(keys)):
            found, row, token, c = level.followers(key)
            discount = F.pad(D, (1, 0))[c.clamp(max=3).long()]   # D1, D2, D3+ for c = 1, 2, >= 3
            total = torch.zeros(len(found), dtype=torch.float64, device=idx.device).index_add_(0, row, c)
            gamma = torch.zeros_like(total).index_add_(0, row, discount)
            position = found[row]
            p.index_put_((position, token), weight[position] * (c - discount) / total[row], accumulate=True)
            weight[found] *= gamma / total
        p += weight[:, None] / V
        return p.log().float().view(B, T, V), x[:, x.shape[1] - (n - 1):].unsqueeze(0)


# ---------------------------------------------------------------------------- fitting

def kgram_keys(ids: torch.Tensor, k: int, vocab_size: int) -> torch.Tensor:
    """The base-V key of every k-gram of `ids`: (len(ids) - k + 1,) int64."""
    powers = vocab_size ** torch.arange(k - 1, -1, -1, device=ids.device)
    return (ids.unfold(0, k, 1) * powers).sum(1)


def modified_discounts(counts: torch.Tensor) -> torch.Tensor:
    """Chen & Goodman's estimates of D1, D2, D3+ from the numbers n1..n4 of n-grams seen 1..4 times."""
    n = [0] + [int((counts == j).sum()) for j in range(1, 5)]
    Y = n[1] / max(n[1] + 2 * n[2], 1)
    D = [j - (j + 1) * Y * n[j + 1] / max(n[j], 1) for j in range(1, 4)]
    # A zero discount would leave gamma = 0 and unseen tokens with p = 0 (possible on tiny texts).
    return torch.tensor([min(max(d, 0.05), j) for j, d in enumerate(D, 1)], dtype=torch.float64)


class Counts:
    """Raw and continuation counts of every order up to `max_order`, counted once for all candidate orders."""

    def __init__(self, ids: torch.Tensor, vocab_size: int, max_order: int):
        NGramConfig(vocab_size=vocab_size, order=max_order)      # checks that the keys fit in int64
        if len(ids) <= max_order:
            raise ValueError(f"need more than {max_order} tokens to count {max_order}-grams")
        self.vocab_size = vocab_size
        self.raw, self.continuation = {}, {}
        keys = {k: kgram_keys(ids, k, vocab_size) for k in range(1, max_order + 1)}
        for k in range(1, max_order + 1):
            self.raw[k] = torch.unique(keys[k], return_counts=True)
            if k < max_order:                                    # N1+(.w): distinct left neighbours of w,
                wider = torch.unique(keys[k + 1]) % vocab_size ** k
                start = keys[k][:1]                              # the text's start counting as one of them
                self.continuation[k] = torch.unique(torch.cat([wider, start]), return_counts=True)

    def model(self, order: int) -> NGramLM:
        """The KN model of `order`: raw counts at the top order, continuation counts below."""
        tables = [self.continuation[k] for k in range(1, order)] + [self.raw[order]]
        config = NGramConfig(vocab_size=self.vocab_size, order=order,
                             contexts=[len(torch.unique_consecutive(keys // self.vocab_size)) for keys, _ in tables],
                             ngrams=[len(keys) for keys, _ in tables])
        model = NGramLM(config)
        for level, D, (keys, counts) in zip(model.levels, model.discounts, tables):
            level.fill(keys, counts, self.vocab_size)
            D.copy_(modified_discounts(counts))
        return model.eval()


def ngram_from_ids(ids: torch.Tensor, vocab_size: int, order: int) -> NGramLM:
    """A KN model of one order counted from the token ids `ids` (1-D)."""
    return Counts(ids, vocab_size, order).model(order)


def nll(model: NGramLM, ids: torch.Tensor) -> torch.Tensor:
    """Mean -log p(ids[t] | ids[:t]) for t = 1..N-1 in one pass (what `zoo.evaluate.score` computes)."""
    logp, _ = model(ids[None, :-1])
    return F.nll_loss(logp[0].double(), ids[1:].long())      # targets of any integer dtype


@torch.no_grad()
def perplexity(model: NGramLM, ids: torch.Tensor) -> float:
    """exp(nll): the perplexity of the token ids `ids` (1-D)."""
    return math.exp(nll(model, ids).item())


def tune_discounts(model: NGramLM, ids: torch.Tensor, max_iter: int = 30) -> None:
    """Fit D1, D2, D3+ of every order to held-out `ids` by L-BFGS, from Chen & Goodman's estimates.

    D_j = j sigmoid(theta) stays in (0, j), which keeps every probability positive.
    """
    j = torch.arange(1, 4, dtype=torch.float64, device=model.discounts.device)
    theta = torch.logit((model.discounts / j).clamp(0.01, 0.99)).requires_grad_()
    optimizer = torch.optim.LBFGS([theta], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        model.discounts = j * theta.sigmoid()
        loss = nll(model, ids)
        loss.backward()
        return loss

    optimizer.step(closure)
    model.discounts = (j * theta.sigmoid()).detach()


def fit_ngram(train_ids: torch.Tensor, valid_ids: torch.Tensor, vocab_size: int, orders=range(2, 13),
              tune: bool = True) -> tuple[NGramLM, dict[int, float]]:
    """Count `train_ids`, keep the order with the lowest validation perplexity (Chen & Goodman's discounts),
    then, if `tune`, fit its discounts to `valid_ids`. Returns the model and every order's perplexity."""
    counts = Counts(train_ids, vocab_size, max(orders))
    valid = {order: perplexity(counts.model(order), valid_ids) for order in orders}
    model = counts.model(min(valid, key=valid.get))
    if tune:
        tune_discounts(model, valid_ids)
    return model, valid
