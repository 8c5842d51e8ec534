// Autoregressive sampling with the whole loop in C++ (float32, no autograd).
//
// At batch 1 a step is a few matrix-vector products over up to a few MB of weights: bound by the cache's
// bandwidth, and per-op dispatch would dominate. So the products are loops over vector registers, and a
// team of threads splits every layer's hidden units (as in recurrence.cpp), each thread streaming its own
// copy of its columns of the weights, packed in the order they are read, from its own L2 cache. Each
// thread computes the (small) output layer whole and picks the same token, so a step has one barrier per
// layer. The prompt is read by the same loop. The cell updates reuse the training kernels' row functions;
// the token choice follows pick() in reference.py op for op, so both paths give the same tokens for the
// same seed.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "cells.h"
#include "support.h"

namespace zoo {
namespace {

using at::Tensor;

constexpr int64_t kSmallHead = 256;  // tokens: a head each thread computes whole

// 16 floats: one AVX-512 register (two AVX2 ones); GCC and Clang lower the arithmetic to what the CPU has.
// Explicit vector accumulators stay in registers, where a float array would be spilled to the stack.
typedef float Vec __attribute__((vector_size(64)));
inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Columns [k*h + u0, k*h + u0 + n) of W (rows, ld) for blocks k = first .. first + blocks - 1, side by
// side: a thread's private, contiguous copy (rows, blocks * n) of the biases and of the first layer's
// token table (all small).
std::vector<float> columns(const Tensor& W, int64_t h, int64_t first, int64_t blocks, Slice u) {
  const Tensor W2 = W.contiguous().view({-1, W.size(-1)});
  const int64_t rows = W2.size(0), ld = W2.size(1);
  const float* w = W2.const_data_ptr<float>();
  std::vector<float> out(rows * blocks * u.n);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < blocks; ++k)
      std::copy_n(w + i * ld + (first + k) * h + u.u0, u.n, out.data() + (i * blocks + k) * u.n);
  return out;
}

// The column blocks of a matrix-vector product, left to right: 128 columns (8 vectors of accumulators),
// then 16, the last one padded with zero columns (a scalar dot product would cost more than the rest).
inline int64_t block_width(int64_t j, int64_t n) { return j + 128 <= n ? 128 : 16; }

// A thread's columns of W laid out for matvec: the matrix M (K, n) = columns(W, h, first, blocks, u),
// each column block [j, j + width) stored as its K rows of width floats from offset j * K, so that the
// product reads the weights once, in order, and the prefetcher streams them. Copied from W directly:
// row by row, or for torch.nn's transposed weight_hh.t() from its contiguous columns.
struct Packed {
  int64_t K = 0, n = 0;
  std::vector<float> w;

  Packed() = default;
  Packed(const Tensor& W_in, int64_t h, int64_t first, int64_t blocks, Slice u)
      : K(W_in.size(0)), n(blocks * u.n), w(K * ((n + 15) / 16 * 16)) {
    const Tensor W = W_in.stride(0) == 1 || W_in.stride(1) == 1 ? W_in : W_in.contiguous();
    const int64_t s0 = W.stride(0), s1 = W.stride(1), wide = n / 128 * 128;  // [0, wide): 128-wide blocks
    const float* src = W.const_data_ptr<float>();
    auto block_of = [&](int64_t c) { return c < wide ? c / 128 * 128 : wide + (c - wide) / 16 * 16; };
    if (s1 != 1) {  // contiguous columns: a block 16 rows at a time, so that the writes stay in L1
      for (int64_t j = 0, width = 0; j < n; j += width) {
        width = block_width(j, n);
        for (int64_t k0 = 0; k0 < K; k0 += 16)
          for (int64_t c = j; c < std::min(n, j + width); ++c) {
            const float* col = src + ((first + c / u.n) * h + u.u0 + c % u.n) * s1;
            for (int64_t k = k0; k < std::min(K, k0 + 16); ++k) w[j * K + k * width + (c - j)] = col[k];
          }
      }
      return;
    }
    for (int64_t k = 0; k < K; ++k)
      for (int64_t g = 0; g < blocks; ++g) {  // row k of gate block g: u.n contiguous floats of W
        const float* row = src + k * s0 + (first + g) * h + u.u0;
        for (int64_t c = g * u.n, end = c + u.n; c < end;) {  // split where M's column blocks split
          const int64_t j = block_of(c), width = block_width(j, n), take = std::min(end, j + width) - c;
          std::copy_n(row + (c - g * u.n), take, w.data() + j * K + k * width + (c - j));
          c += take;
        }
      }
  }
};

// out[:16N] = bias + x @ P for one row x (K,) and one block P (K, 16N) of a Packed matrix. A narrow
// block keeps R independent sums over k, so that the FMA latency does not serialise it.
template <int N>
void matvec_block(int64_t K, const float* x, const float* P, const float* bias, float* out) {
  constexpr int R = N >= 4 ? 1 : 4;
  Vec acc[R][N] = {};
  int64_t k = 0;
  for (; k + R <= K; k += R)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int i = 0; i < N; ++i) __builtin_prefetch(P + ((k + r + 6) * N + i) * 16);  // ~10%; never faults
      const Vec xk = Vec{} + x[k + r];
#pragma GCC unroll 8
      for (int i = 0; i < N; ++i) acc[r][i] += xk * load(P + ((k + r) * N + i) * 16);
    }
  for (; k < K; ++k)
#pragma GCC unroll 8
    for (int i = 0; i < N; ++i) acc[0][i] += (Vec{} + x[k]) * load(P + (k * N + i) * 16);
  for (int i = 0; i < N; ++i) {
    Vec sum = bias ? load(bias + 16 * i) : Vec{};
    for (int r = 0; r < R; ++r) sum += acc[r][i];
    std::memcpy(out + 16 * i, &sum, sizeof sum);
  }
}

// out[b, :n] = bias + x[b] @ W for b < B; x (B, K) and out (B, n) with row strides ldx, ldo.
void matvec(int64_t B, const float* x, int64_t ldx, const Packed& W, const float* bias, float* out,
            int64_t ldo) {
  for (int64_t b = 0; b < B; ++b) {
    const float *xb = x + b * ldx, *P = W.w.data();
    float* ob = out + b * ldo;
    for (int64_t j = 0, bw = 0; j < W.n; j += bw) {
      bw = block_width(j, W.n);
      if (bw == 128) {
        matvec_block<8>(W.K, xb, P + j * W.K, bias ? bias + j : nullptr, ob + j);
      } else {  // 16 columns, of which the last block may hold fewer
        const int64_t real = std::min<int64_t>(16, W.n - j);
        float part[16] = {}, bias16[16] = {};
        if (bias) std::copy_n(bias + j, real, bias16);
        matvec_block<1>(W.K, xb, P + j * W.K, bias16, part);
        std::copy_n(part, real, ob + j);
      }
    }
  }
}

// The state of one layer, shared by the team: H double-buffered (all threads read H_{t-1} while each
// writes its units of H_t), C for lstm, R * H_{t-1} for gru-book; all (B, h).
struct LayerState {
  std::string cell;
  int64_t h, G;
  std::vector<float> H[2], C, rh;
};

// One thread's part of a layer: its units u, its columns of the weights, and (B, G*n) buffers with gate
// block k of row b at b*G*n + k*n.
struct LayerPart {
  Slice u;
  std::vector<float> W_x, b_x, b_hn, xw, a, nn;  // W_x row-major: a table over tokens in the first layer
  Packed W_xp, W_h, W_hn;                         // W_x packed in a higher layer

  LayerPart(const LayerState& y, Slice s, const Tensor& Wx, const Tensor& bx, const Tensor& Wh,
            const Tensor& bhn, int64_t B, bool token_input)
      : u(s),
        W_x(token_input ? columns(Wx, y.h, 0, y.G, s) : std::vector<float>()),
        b_x(columns(bx, y.h, 0, y.G, s)),
        b_hn(columns(bhn, y.h, 0, 1, s)),
        xw(B * y.G * s.n),
        a(B * y.G * s.n),
        nn(B * s.n) {
    const int64_t hn = y.cell == "gru-book" ? 2 : y.G;  // gate blocks in W_h (gru-book: W_hn apart)
    W_h = Packed(Wh, y.h, 0, hn, s);
    if (y.cell == "gru-book") W_hn = Packed(Wh, y.h, 2, 1, s);
    if (!token_input) W_xp = Packed(Wx, y.h, 0, y.G, s);
  }

  // Step t: input projection, recurrent product and cell update for this thread's units.
  void step(LayerState& y, int64_t t, int64_t B, const int64_t* tokens, const LayerState* below) {
    const int64_t n = u.n, h = y.h, gn = y.G * n;
    const float* h_prev = y.H[t % 2].data();
    float* h_new = y.H[(t + 1) % 2].data();
    if (below) {  // X W_x + b_x with X the layer below's new H
      const float* x = below->H[(t + 1) % 2].data();
      matvec(B, x, below->h, W_xp, b_x.data(), xw.data(), gn);
    } else {  // one-hot times W_x is a row lookup
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < gn; ++j) xw[b * gn + j] = W_x[tokens[b] * gn + j] + b_x[j];
    }
    const bool book = y.cell == "gru-book";
    matvec(B, h_prev, h, W_h, nullptr, a.data(), gn);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t v = b * h + u.u0;  // this row's units in a (B, h) array
      const Gates<const float> x{xw.data() + b * gn, n};
      const Gates<float> ab{a.data() + b * gn, n};  // the cell functions update a in place
      if (y.cell == "rnn") {
        rnn_fwd(n, x[0], ab[0], h_new + v);
      } else if (y.cell == "lstm") {
        lstm_fwd(n, x, ab, y.C.data() + v, y.C.data() + v, h_new + v);  // C updated in place
      } else if (y.cell == "gru") {
        gru_fwd(n, x, ab, b_hn.data(), h_prev + v, nn.data() + b * n, h_new + v);
      } else {
        grub_fwd1(n, x, ab, h_prev + v, y.rh.data() + v);
      }
    }
    if (!book) return;
    team_barrier();  // R * H_{t-1} complete
    matvec(B, y.rh.data(), h, W_hn, nullptr, a.data() + 2 * n, gn);
    for (int64_t b = 0; b < B; ++b) {
      const Gates<float> ab{a.data() + b * gn, n};
      grub_fwd2(n, Gates<const float>{xw.data() + b * gn, n}, ab[1], ab[2], h_prev + b * h + u.u0,
                h_new + b * h + u.u0);
    }
  }
};

// The next token of one row of logits: see pick() in reference.py, which this follows op for op.
int64_t pick(const float* logits, int64_t V, double temperature, int64_t top_k, double top_p, float u,
             std::vector<float>& p, std::vector<int64_t>& order) {
  if (temperature == 0.0) return std::max_element(logits, logits + V) - logits;  // first maximum
  for (int64_t v = 0; v < V; ++v) p[v] = logits[v] / static_cast<float>(temperature);
  if (top_k > 0 && top_k < V) {  // keep the top_k largest (ties with the k-th kept)
    std::vector<float> sorted(p.begin(), p.begin() + V);
    std::nth_element(sorted.begin(), sorted.begin() + top_k - 1, sorted.end(), std::greater<>());
    const float kth = sorted[top_k - 1];
    for (int64_t v = 0; v < V; ++v) p[v] = p[v] < kth ? -INFINITY : p[v];
  }
  const float mx = *std::max_element(p.begin(), p.begin() + V);
  float sum = 0.0f;
  for (int64_t v = 0; v < V; ++v) sum += (p[v] = std::exp(p[v] - mx));
  for (int64_t v = 0; v < V; ++v) p[v] /= sum;  // softmax
  if (top_p < 1.0) {  // drop a token once the more probable ones already reach top_p
    std::iota(order.begin(), order.begin() + V, 0);
    std::stable_sort(order.begin(), order.begin() + V, [&](int64_t i, int64_t j) { return p[i] > p[j]; });
    double acc = 0.0;  // torch.cumsum accumulates float in double
    for (int64_t r = 0; r < V; ++r) {
      const float pr = p[order[r]];
      acc += pr;
      if (static_cast<float>(acc) - pr >= static_cast<float>(top_p)) p[order[r]] = 0.0f;
    }
  }
  double acc = 0.0;  // inverse CDF: the first token whose cumulative probability exceeds u * total
  for (int64_t v = 0; v < V; ++v) acc += p[v];
  const float threshold = u * static_cast<float>(acc);
  acc = 0.0;
  int64_t token = 0;
  for (int64_t v = 0; v < V; ++v) token += static_cast<float>(acc += p[v]) <= threshold;
  return std::min(token, V - 1);
}

std::tuple<Tensor, std::vector<Tensor>> sample_loop(
    const std::vector<std::string>& cells, const std::vector<Tensor>& W_x, const std::vector<Tensor>& b_x,
    const std::vector<Tensor>& W_h, const std::vector<std::optional<Tensor>>& b_hn, const Tensor& W_q,
    const Tensor& b_q, const std::vector<Tensor>& state, const Tensor& prompt, int64_t steps,
    double temperature, int64_t top_k, double top_p, std::optional<at::Generator> generator) {
  TORCH_CHECK(prompt.dim() == 2 && prompt.size(1) >= 1, "sample_loop: prompt must be (B, P) with P >= 1");
  const int64_t B = prompt.size(0), given_len = prompt.size(1), V = W_q.size(1), L = cells.size();
  std::vector<LayerState> layers(L);
  int64_t min_h = W_h[0].size(0);
  size_t next = 0;  // state is flat: H of each layer, followed by C for an lstm layer
  for (int64_t l = 0; l < L; ++l) {
    LayerState& y = layers[l];
    y.cell = cells[l], y.h = W_h[l].size(0), y.G = W_h[l].size(1) / y.h, min_h = std::min(min_h, y.h);
    const int64_t inputs = l ? layers[l - 1].h : V;
    TORCH_CHECK(W_x[l].sizes() == at::IntArrayRef({inputs, y.G * y.h}) && b_x[l].numel() == y.G * y.h &&
                    W_h[l].size(1) == y.G * y.h && (!b_hn[l] || b_hn[l]->numel() == y.h),
                "sample_loop: layer ", l, " has inconsistent weight shapes");
    TORCH_CHECK(next + (y.cell == "lstm") < state.size() && state[next].numel() == B * y.h &&
                    (y.cell != "lstm" || state[next + 1].numel() == B * y.h),
                "sample_loop: the state of layer ", l, " must be (B, h)");
    const Tensor H = state[next++].contiguous();
    y.H[0].assign(H.const_data_ptr<float>(), H.const_data_ptr<float>() + B * y.h);
    y.H[1].resize(B * y.h), y.rh.resize(B * y.h);
    if (y.cell == "lstm") {
      const Tensor C = state[next++].contiguous();
      y.C.assign(C.const_data_ptr<float>(), C.const_data_ptr<float>() + B * y.h);
    }
  }
  TORCH_CHECK(W_q.size(0) == layers.back().h && b_q.numel() == V, "sample_loop: head must be (h, V), (V,)");
  const Tensor U = temperature > 0 ? at::rand({steps, B}, generator, W_q.options()) : Tensor();
  const float* u = temperature > 0 ? U.const_data_ptr<float>() : nullptr;
  const Tensor tokens = at::empty({B, steps}, prompt.options().dtype(at::kLong));
  const Tensor given = prompt.to(at::kLong).contiguous();
  const int64_t* fed = given.const_data_ptr<int64_t>();
  int64_t* out = tokens.mutable_data_ptr<int64_t>();
  std::vector<float> shared_logits(B * V);
  run_team(min_h, [&](int p, int P) {
    std::vector<LayerPart> parts;
    for (int64_t l = 0; l < L; ++l)
      parts.emplace_back(layers[l], unit_slice(layers[l].h, p, P), W_x[l], b_x[l], W_h[l],
                         b_hn[l] ? *b_hn[l] : at::zeros({layers[l].h}, W_h[l].options()), B, l == 0);
    // A small head (a char vocabulary) every thread computes whole into its own buffer, and so picks the
    // same tokens as the others with no barrier (H_t, which it reads, is overwritten only after the next
    // step's barrier). A large one (words) the team splits.
    const bool split_head = P > 1 && V > kSmallHead;
    const Slice head = split_head ? unit_slice(V, p, P) : Slice{0, V};
    const Packed W_qp(W_q, 0, 0, 1, head);
    const std::vector<float> b_qp = columns(b_q, 0, 0, 1, head);
    std::vector<float> own_logits(split_head ? 0 : B * V);
    float* logits = split_head ? shared_logits.data() : own_logits.data();
    std::vector<int64_t> prev(B);
    std::vector<float> probs(V);
    std::vector<int64_t> order(V);
    for (int64_t t = 0; t < given_len - 1 + steps; ++t) {  // the prompt, then each chosen token
      if (t < given_len)
        for (int64_t b = 0; b < B; ++b) prev[b] = fed[b * given_len + t];
      for (int64_t l = 0; l < L; ++l) {
        parts[l].step(layers[l], t, B, prev.data(), l ? &layers[l - 1] : nullptr);
        team_barrier();  // this layer's H_t complete
      }
      const int64_t g = t - (given_len - 1);  // the index of the token chosen now, once the prompt is read
      if (g < 0) continue;
      const LayerState& top = layers.back();
      matvec(B, top.H[(t + 1) % 2].data(), top.h, W_qp, b_qp.data(), logits + head.u0, V);
      if (split_head) team_barrier();  // logits complete
      for (int64_t b = 0; b < B; ++b) {
        const float draw = u ? u[g * B + b] : 0.0f;
        prev[b] = pick(logits + b * V, V, temperature, top_k, top_p, draw, probs, order);
        if (p == 0) out[b * steps + g] = prev[b];
      }
    }
  });
  const int64_t fed_steps = given_len - 1 + steps;
  std::vector<Tensor> final_state;
  for (const LayerState& y : layers) {
    const std::vector<float>& H = y.H[fed_steps % 2];
    final_state.push_back(at::tensor(at::ArrayRef<float>(H)).view({B, y.h}));
    if (y.cell == "lstm") final_state.push_back(at::tensor(at::ArrayRef<float>(y.C)).view({B, y.h}));
  }
  return {tokens, final_state};
}

}  // namespace
}  // namespace zoo

TORCH_LIBRARY_FRAGMENT(zoo_kernels, m) {
  m.def("sample_loop(str[] cells, Tensor[] W_x, Tensor[] b_x, Tensor[] W_h, Tensor?[] b_hn,"
        " Tensor W_q, Tensor b_q, Tensor[] state, Tensor prompt, int steps, float temperature,"
        " int top_k, float top_p, Generator? generator) -> (Tensor, Tensor[])",
        &zoo::sample_loop);
}
