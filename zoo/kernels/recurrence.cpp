// Forward and backward of one recurrent layer over all T steps, with the time loop in C++.
//
// A team of threads splits the hidden units; per step each thread does one GEMM for its units' gate
// columns, H_{t-1} W_h[:, slice] (MKL, packed once), then the fused elementwise pass (cells.h) for those
// units, then one barrier. Backward: per step the elementwise pass, a barrier, and one GEMM per thread
// for its slice of dH_{t-1} = dA_t W_h^T; the weight gradient is ONE batched GEMM at the end,
// dW_h = [H_0 .. H_{T-1}]^T [dA_1 .. dA_T], instead of T small ones.
// Tensors are time-major: XW (T, B, G*h) with the input biases already added, states (B, h). For a first
// layer over tokens, XW comes as a table (V, G*h) and ids (T, B), XW[t, b] = table[ids[t, b]], read in
// place. W_h (h, G*h) is row-major or the transposed view of a row-major (G*h, h): torch.nn's weight_hh.t().
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "cells.h"
#include "support.h"

namespace zoo {
namespace {

using at::Tensor;
using TensorList = std::vector<Tensor>;

// Saved gate buffers are (T, B, S*h) with S values per unit, in groups of 16 units: the group starting
// at unit u (a multiple of 16) holds its S*sz values at offset S*u, value k at S*u + k*sz. So a thread's
// slice of a row is contiguous: its GEMM writes the pre-activations there and the elementwise pass turns
// them into the saved activations in place, instead of scattering them over the row.
constexpr int64_t kGroup = 16;

// f(u, sz) for each group of the slice; with one value per unit (rnn) the layout is the plain one and
// the whole slice is one group.
template <typename F>
void for_groups(Slice s, int64_t values, const F& f) {
  const int64_t group = values == 1 ? s.n : kGroup;
  for (int64_t u = s.u0; u < s.u0 + s.n; u += group) f(u, std::min(group, s.u0 + s.n - u));
}

// The input projections of row r = t * B + b: row r of XW (T*B, G*h), or with a lookup the table's row
// ids[r].
template <typename T>
struct Inputs {
  const T* xw;
  const int64_t* ids;  // null: XW itself
  int64_t gh;
  const T* row(int64_t r) const { return xw + (ids ? ids[r] : r) * gh; }
};

// W_h is read in place when row-major or transposed (torch.nn's weight_hh.t()); other strides are copied
// once into the row-major layout.
bool row_major(const Tensor& W) { return W.stride(1) == 1 && W.stride(0) >= W.size(1); }
bool transposed(const Tensor& W) { return W.stride(0) == 1 && W.stride(1) >= W.size(0); }
Tensor readable(const Tensor& W) { return row_major(W) || transposed(W) ? W : W.contiguous(); }
template <typename T>
Operand<T> operand(const Tensor& W) {
  return {W.const_data_ptr<T>(), row_major(W) ? W.stride(0) : W.stride(1), !row_major(W)};
}

// A thread's columns of W_h (h, G*h): for its units, the first `blocks` gate blocks, copied in the
// grouped order above into a slab, so that one GEMM computes all of them. The slab keeps W_h's layout:
// (h, blocks * n) row-major, or for a transposed W_h the transpose, whose rows are W_h's columns.
template <typename T>
Operand<T> gate_columns(Operand<T> W, int64_t h, int64_t blocks, Slice s) {
  T* slab = scratch<T>(kSlab, h * blocks * s.n);
  if (W.transposed) {  // column c of W_h is contiguous at W.at(0, c)
    for_groups(s, blocks, [&](int64_t u, int64_t sz) {
      for (int64_t k = 0; k < blocks; ++k)
        for (int64_t j = 0; j < sz; ++j)
          std::memcpy(slab + (blocks * (u - s.u0) + k * sz + j) * h, W.at(0, k * h + u + j), h * sizeof(T));
    });
    return {slab, h, true};
  }
  for (int64_t i = 0; i < h; ++i)
    for_groups(s, blocks, [&](int64_t u, int64_t sz) {
      for (int64_t k = 0; k < blocks; ++k)
        std::memcpy(slab + i * blocks * s.n + blocks * (u - s.u0) + k * sz, W.at(i, k * h + u),
                    sz * sizeof(T));
    });
  return {slab, blocks * s.n, false};
}

template <typename T>
std::tuple<TensorList, TensorList> forward_impl(const std::string& cell, const Tensor& XW, const Tensor& ids,
                                                const Tensor& W_h, const Tensor& H0, const Tensor& C0,
                                                const Tensor& b_hn) {
  const Tensor& rows = ids.defined() ? ids : XW;  // (T, B, ...)
  const int64_t steps = rows.size(0), B = rows.size(1), h = W_h.size(0), gh = W_h.size(1), G = gh / h;
  TORCH_CHECK(steps > 0, "recurrence needs at least one time step");
  auto empty = [&](at::IntArrayRef sizes) { return recycled_empty(sizes, XW.options()); };
  // [H_0; H_1 .. H_T] in one buffer: H_{t-1} of every step, and in backward the left operand of dW_h.
  // Hs is a view of it, so autograd refuses in-place changes to Hs that would corrupt the saved buffer.
  const Tensor H = empty({steps + 1, B, h}), Hs = H.narrow(0, 1, steps);
  std::copy_n(H0.const_data_ptr<T>(), B * h, H.mutable_data_ptr<T>());
  const Operand<T> w = operand<T>(W_h);
  const Inputs<T> x{XW.const_data_ptr<T>(), ids.defined() ? ids.const_data_ptr<int64_t>() : nullptr, gh};
  T* hs = Hs.mutable_data_ptr<T>();
  auto h_prev = [&](int64_t t) { return hs + (t - 1) * B * h; };  // (B, h); t = 0 is H_0
  auto x_at = [&](int64_t row, int64_t u) { return Gates<const T>{x.row(row) + u, h}; };

  if (cell == "gru-book") {  // saved: R, Z (grouped), H~ and R * H_{t-1}
    const Tensor S = empty({steps, B, 2 * h}), N = empty({steps, B, h}), RH = empty({steps, B, h});
    T *sv = S.mutable_data_ptr<T>(), *nv = N.mutable_data_ptr<T>(), *rh = RH.mutable_data_ptr<T>();
    run_team(h, [&](int p, int P) {
      const Slice s = unit_slice(h, p, P);
      const StepGemm<T> gemm_rz(gate_columns(w, h, 2, s), B, 2 * s.n, h, kPack0);
      const StepGemm<T> gemm_n(w.block(0, 2 * h + s.u0), B, s.n, h, kPack1);  // W_h[:, 2h + slice]
      for (int64_t t = 0; t < steps; ++t) {
        if (t) team_barrier();  // H_{t-1} complete
        gemm_rz(h_prev(t), h, sv + t * B * 2 * h + 2 * s.u0, 2 * h);
        for (int64_t b = 0, row = t * B; b < B; ++b, ++row)
          for_groups(s, 2, [&](int64_t u, int64_t sz) {
            grub_fwd1(sz, x_at(row, u), Gates<T>{sv + row * 2 * h + 2 * u, sz}, h_prev(t) + b * h + u,
                      rh + row * h + u);
          });
        team_barrier();  // R * H_{t-1} complete
        gemm_n(rh + t * B * h, h, nv + t * B * h + s.u0, h);
        for (int64_t b = 0, row = t * B; b < B; ++b, ++row)
          for_groups(s, 2, [&](int64_t u, int64_t sz) {
            grub_fwd2(sz, x_at(row, u), sv + row * 2 * h + 2 * u + sz, nv + row * h + u,
                      h_prev(t) + b * h + u, hs + row * h + u);
          });
      }
    });
    return {{Hs, Hs[steps - 1].clone()}, {H, S, N, RH}};
  }
  TORCH_CHECK(cell == "rnn" || cell == "lstm" || cell == "gru", "unknown cell ", cell);
  const bool lstm = cell == "lstm", gru = cell == "gru";
  // saved (grouped): lstm the gates I, F, C~, O, gru R, Z and a_n + b_hn; then lstm C_t, gru N
  const Tensor A = lstm || gru ? empty({steps, B, gh}) : Hs;
  const Tensor S2 = lstm || gru ? empty({steps, B, h}) : Tensor();
  T *g = A.mutable_data_ptr<T>(), *s2 = S2.defined() ? S2.mutable_data_ptr<T>() : nullptr;
  // raw pointers taken once: a Tensor's data_ptr is an out-of-line call with checks, too slow per group
  const T *c0 = lstm ? C0.const_data_ptr<T>() : nullptr, *bhn = gru ? b_hn.const_data_ptr<T>() : nullptr;
  run_team(h, [&](int p, int P) {
    const Slice s = unit_slice(h, p, P);
    const StepGemm<T> gemm(gate_columns(w, h, G, s), B, G * s.n, h, kPack0);
    for (int64_t t = 0; t < steps; ++t) {
      if (t) team_barrier();  // H_{t-1} complete
      gemm(h_prev(t), h, g + t * B * gh + G * s.u0, gh);  // rnn: straight into Hs
      for (int64_t b = 0, row = t * B; b < B; ++b, ++row)
        for_groups(s, G, [&](int64_t u, int64_t sz) {
          T* hout = hs + row * h + u;
          if (lstm) {
            const T* c_prev = t ? s2 + (row - B) * h + u : c0 + b * h + u;
            lstm_fwd(sz, x_at(row, u), Gates<T>{g + row * gh + G * u, sz}, c_prev, s2 + row * h + u, hout);
          } else if (gru) {
            gru_fwd(sz, x_at(row, u), Gates<T>{g + row * gh + G * u, sz}, bhn + u,
                    h_prev(t) + b * h + u, s2 + row * h + u, hout);
          } else {
            rnn_fwd(sz, x.row(row) + u, hout, hout);
          }
        });
    }
  });
  if (lstm) return {{Hs, Hs[steps - 1].clone(), S2[steps - 1].clone()}, {H, A, S2}};
  if (gru) return {{Hs, Hs[steps - 1].clone()}, {H, A, S2}};
  return {{Hs, Hs[steps - 1].clone()}, {H}};
}

// grads = (dHs, dH_T[, dC_T]), undefined where autograd has none (a final state the loss does not use).
// Returns (dXW, or with a lookup dtable (V, G*h); dW_h; dH0[; dC0 for lstm | db_hn for gru]).
template <typename T>
TensorList backward_impl(const std::string& cell, const TensorList& saved, const Tensor& W_h,
                         const Tensor& C0, const Tensor& ids, int64_t table_rows, const TensorList& grads) {
  const Tensor& H = saved[0];  // [H_0; Hs]
  const int64_t steps = H.size(0) - 1, B = H.size(1), h = W_h.size(0), gh = W_h.size(1), G = gh / h;
  auto empty = [&](at::IntArrayRef sizes) { return recycled_empty(sizes, H.options()); };
  auto state_grad = [&](const Tensor& g) {  // a writable copy, or zeros
    const Tensor d = empty({B, h});
    return g.defined() ? d.copy_(g) : d.zero_();
  };
  const Tensor dHs = grads[0].defined() ? grads[0].contiguous() : at::zeros({steps, B, h}, H.options());
  const Tensor dh_rec = state_grad(grads[1]);  // dH_t arriving through W_h (dH_T at the top)
  const Tensor dXW = empty({steps, B, gh});
  const Tensor dtable = ids.defined() ? empty({table_rows, gh}).zero_() : Tensor();
  const Operand<T> w = operand<T>(W_h);
  // dW_h in W_h's layout: for torch.nn's weight_hh.t() the transpose of a row-major (G*h, h), which is
  // then weight_hh's gradient as it is
  Tensor dW = w.transposed ? empty({gh, h}).t() : empty({h, gh});
  const Tensor H_prev = H.narrow(0, 0, steps).flatten(0, 1);  // (T*B, h): H_0 .. H_{T-1}
  const T *hs = H.const_data_ptr<T>() + B * h, *dhs = dHs.const_data_ptr<T>();
  const int64_t* id = ids.defined() ? ids.const_data_ptr<int64_t>() : nullptr;
  T *dxw = dXW.mutable_data_ptr<T>(), *dr = dh_rec.mutable_data_ptr<T>();
  T* dtab = id ? dtable.mutable_data_ptr<T>() : nullptr;
  auto h_prev = [&](int64_t t) { return hs + (t - 1) * B * h; };
  auto dx_at = [&](int64_t row, int64_t u) { return Gates<T>{dxw + row * gh + u, h}; };
  // The backward of the row lookup, dtable[ids[t, b]] += dXW[t, b], on the thread's units of every gate
  // block: threads own disjoint columns, so no two write the same element. Gate block by gate block, so
  // that the table's lines in use (V rows of one block) stay in L1 from one batch row to the next.
  auto add_to_table = [&](int64_t t, Slice s) {
    if (!id) return;
    for (int64_t k = 0; k < G; ++k)
      for (int64_t row = t * B; row < (t + 1) * B; ++row) {
        const T* src = dxw + row * gh + k * h + s.u0;
        T* dst = dtab + id[row] * gh + k * h + s.u0;
        ZOO_IVDEP for (int64_t j = 0; j < s.n; ++j) dst[j] += src[j];
      }
  };
  const Tensor dX = id ? dtable : dXW;

  if (cell == "gru-book") {
    const Tensor dh_dir = at::zeros_like(dh_rec), drh = empty({B, h});  // dh_dir: Z * dH_t
    const T *sv = saved[1].const_data_ptr<T>(), *nv = saved[2].const_data_ptr<T>();
    T *q = drh.mutable_data_ptr<T>(), *dd = dh_dir.mutable_data_ptr<T>();
    run_team(h, [&](int p, int P) {
      const Slice s = unit_slice(h, p, P);
      // d(R * H_{t-1})[:, slice] = dH~_pre W_h[slice, 2h:]^T
      // dH_{t-1}[:, slice] = d[R Z]_pre W_h[slice, :2h]^T
      const StepGemm<T> gemm_n(w.block(s.u0, 2 * h).t(), B, s.n, h, kPack0);
      const StepGemm<T> gemm_rz(w.block(s.u0, 0).t(), B, s.n, 2 * h, kPack1);
      for (int64_t t = steps - 1; t >= 0; --t) {
        for (int64_t b = 0, row = t * B; b < B; ++b, ++row)
          for_groups(s, 2, [&](int64_t u, int64_t sz) {
            grub_bwd1(sz, sv + row * 2 * h + 2 * u + sz, nv + row * h + u, h_prev(t) + b * h + u,
                      dhs + row * h + u, dr + b * h + u, dd + b * h + u, dx_at(row, u));
          });
        team_barrier();  // dH~_pre complete
        gemm_n(dxw + t * B * gh + 2 * h, gh, q + s.u0, h);
        for (int64_t b = 0, row = t * B; b < B; ++b, ++row)
          for_groups(s, 2, [&](int64_t u, int64_t sz) {
            grub_bwd2(sz, sv + row * 2 * h + 2 * u, h_prev(t) + b * h + u, q + b * h + u, dd + b * h + u,
                      dx_at(row, u));
          });
        add_to_table(t, s);
        team_barrier();  // dR_pre complete
        gemm_rz(dxw + t * B * gh, gh, dr + s.u0, h);
      }
    });
    Tensor dW_rz = dW.narrow(1, 0, 2 * h), dW_n = dW.narrow(1, 2 * h, h);
    at::mm_out(dW_rz, H_prev.t(), dXW.narrow(2, 0, 2 * h).flatten(0, 1));
    at::mm_out(dW_n, saved[3].flatten(0, 1).t(), dXW.narrow(2, 2 * h, h).flatten(0, 1));  // (R * H)^T dH~_pre
    return {dX, dW, dh_rec + dh_dir};
  }
  const bool lstm = cell == "lstm", gru = cell == "gru";
  const Tensor dC = lstm ? state_grad(grads[2]) : Tensor();
  const Tensor dh_dir = gru ? at::zeros_like(dh_rec) : Tensor();
  const Tensor dA = gru ? empty({steps, B, gh}) : dXW;  // dA = dXW except gru's block n
  const T* g = lstm || gru ? saved[1].const_data_ptr<T>() : nullptr;
  const T* s2 = lstm || gru ? saved[2].const_data_ptr<T>() : nullptr;  // lstm C_t, gru N
  T* da = dA.mutable_data_ptr<T>();
  const T* c0 = lstm ? C0.const_data_ptr<T>() : nullptr;
  T *dc = lstm ? dC.mutable_data_ptr<T>() : nullptr, *ddir = gru ? dh_dir.mutable_data_ptr<T>() : nullptr;
  run_team(h, [&](int p, int P) {
    const Slice s = unit_slice(h, p, P);
    const StepGemm<T> gemm(w.block(s.u0, 0).t(), B, s.n, gh, kPack0);  // dA_t W_h[slice, :]^T
    for (int64_t t = steps - 1; t >= 0; --t) {
      for (int64_t b = 0, row = t * B; b < B; ++b, ++row)
        for_groups(s, G, [&](int64_t u, int64_t sz) {
          const int64_t o = row * h + u, v = b * h + u;  // this group in a (T, B, h) and a (B, h) array
          if (lstm) {
            const T* c_prev = t ? s2 + o - B * h : c0 + v;
            lstm_bwd(sz, Gates<const T>{g + row * gh + 4 * u, sz}, c_prev, s2 + o, dhs + o, dr + v,
                     dc + v, dx_at(row, u));
          } else if (gru) {
            gru_bwd(sz, Gates<const T>{g + row * gh + 3 * u, sz}, s2 + o, h_prev(t) + v, dhs + o, dr + v,
                    ddir + v, dx_at(row, u), Gates<T>{da + row * gh + u, h});
          } else {
            rnn_bwd(sz, hs + o, dhs + o, dr + v, dxw + o);
          }
        });
      add_to_table(t, s);
      team_barrier();  // dA_t complete
      gemm(da + t * B * gh, gh, dr + s.u0, h);
    }
  });
  at::mm_out(dW, H_prev.t(), dA.flatten(0, 1));
  if (lstm) return {dX, dW, dh_rec, dC};
  if (gru) return {dX, dW, dh_rec + dh_dir, dA.narrow(2, 2 * h, h).sum({0, 1})};
  return {dX, dW, dh_rec};
}

std::tuple<TensorList, TensorList> forward(const std::string& cell, const Tensor& XW,
                                           const std::optional<Tensor>& ids, const Tensor& W_h,
                                           const Tensor& H0, const std::optional<Tensor>& C0,
                                           const std::optional<Tensor>& b_hn) {
  const Tensor c0 = C0 ? C0->contiguous() : Tensor(), bhn = b_hn ? b_hn->contiguous() : Tensor();
  const Tensor id = ids ? ids->contiguous() : Tensor();
  const int64_t h = W_h.size(0), G = cell == "lstm" ? 4 : cell == "rnn" ? 1 : 3;
  TORCH_CHECK(W_h.dim() == 2 && W_h.size(1) == G * h && (id.defined() ? XW.dim() == 2 : XW.dim() == 3) &&
                  XW.size(-1) == G * h,
              "recurrence: XW must be (T, B, G*h), or a table (V, G*h) with ids, and W_h (h, G*h)");
  if (id.defined()) {
    TORCH_CHECK(id.dim() == 2 && id.scalar_type() == at::kLong, "recurrence: ids must be (T, B) int64");
    const int64_t *first = id.const_data_ptr<int64_t>(), *last = first + id.numel(), V = XW.size(0);
    TORCH_CHECK(std::all_of(first, last, [V](int64_t i) { return 0 <= i && i < V; }),
                "recurrence: ids outside the table's ", V, " rows");
  }
  const int64_t B = (id.defined() ? id : XW).size(1);
  TORCH_CHECK(H0.sizes() == at::IntArrayRef({B, h}), "recurrence: H0 must be (B, h)");
  TORCH_CHECK(cell != "lstm" || (c0.defined() && c0.sizes() == H0.sizes()), "recurrence: C0 must be (B, h)");
  TORCH_CHECK(cell != "gru" || (bhn.defined() && bhn.numel() == h), "recurrence: b_hn must be (h,)");
  const Tensor w = readable(W_h);
  return AT_DISPATCH_FLOATING_TYPES(XW.scalar_type(), "zoo_recurrence_forward", [&] {
    return forward_impl<scalar_t>(cell, XW.contiguous(), id, w, H0.contiguous(), c0, bhn);
  });
}

TensorList backward(const std::string& cell, const TensorList& saved, const Tensor& W_h,
                    const std::optional<Tensor>& C0, const std::optional<Tensor>& ids, int64_t table_rows,
                    const c10::List<std::optional<Tensor>>& grads) {
  const Tensor c0 = C0 ? C0->contiguous() : Tensor(), id = ids ? ids->contiguous() : Tensor();
  TensorList g;
  for (const std::optional<Tensor>& t : grads) g.push_back(t ? *t : Tensor());
  const Tensor w = readable(W_h);
  return AT_DISPATCH_FLOATING_TYPES(W_h.scalar_type(), "zoo_recurrence_backward", [&] {
    return backward_impl<scalar_t>(cell, saved, w, c0, id, table_rows, g);
  });
}

}  // namespace
}  // namespace zoo

TORCH_LIBRARY(zoo_kernels, m) {
  m.def("recurrence_forward(str cell, Tensor XW, Tensor? ids, Tensor W_h, Tensor H0, Tensor? C0,"
        " Tensor? b_hn) -> (Tensor[], Tensor[])",
        &zoo::forward);
  m.def("recurrence_backward(str cell, Tensor[] saved, Tensor W_h, Tensor? C0, Tensor? ids,"
        " int table_rows, Tensor?[] grads) -> Tensor[]",
        &zoo::backward);
}
