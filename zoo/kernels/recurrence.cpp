// Forward and backward of one recurrent layer over all T steps, with the time loop in C++.
//
// A team of threads splits the hidden units; per step each thread does one GEMM for its units' gate
// columns, H_{t-1} W_h[:, slice] (MKL, packed once), then the fused elementwise pass (cells.h) for those
// units, then one barrier. Backward: per step the elementwise pass, a barrier, and one GEMM per thread
// for its slice of dH_{t-1} = dA_t W_h^T; the weight gradient is ONE batched GEMM at the end,
// dW_h = [H_0 .. H_{T-1}]^T [dA_1 .. dA_T], instead of T small ones.
// Tensors are time-major: XW (T, B, G*h) with the input biases already added, W_h (h, G*h), states (B, h).
#include <torch/library.h>

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

// A thread's columns of W_h (h, ld): for its units, the first `blocks` gate blocks, copied into a
// (h, blocks * n) matrix in the grouped order above, so that one GEMM computes all of them.
template <typename T>
const T* gate_columns(const T* W, int64_t ld, int64_t h, int64_t blocks, Slice s) {
  T* slab = scratch<T>(kSlab, h * blocks * s.n);
  for (int64_t i = 0; i < h; ++i)
    for_groups(s, blocks, [&](int64_t u, int64_t sz) {
      for (int64_t k = 0; k < blocks; ++k)
        std::memcpy(slab + i * blocks * s.n + blocks * (u - s.u0) + k * sz, W + i * ld + k * h + u,
                    sz * sizeof(T));
    });
  return slab;
}

// dW = [H_0, H_1 .. H_{T-1}]^T dA: the batched weight gradient, (h, T*B) @ (T*B, n) in one GEMM.
void weight_grad(Tensor dW, const Tensor& H0, const Tensor& Hs, const Tensor& dA) {
  const int64_t steps = Hs.size(0);
  const Tensor h_prev = recycled_empty(Hs.sizes(), Hs.options());
  h_prev[0].copy_(H0);
  h_prev.narrow(0, 1, steps - 1).copy_(Hs.narrow(0, 0, steps - 1));
  at::mm_out(dW, h_prev.flatten(0, 1).t(), dA.flatten(0, 1));
}

template <typename T>
std::tuple<TensorList, TensorList> forward_impl(const std::string& cell, const Tensor& XW,
                                                const Tensor& W_h, const Tensor& H0,
                                                const Tensor& C0, const Tensor& b_hn) {
  const int64_t steps = XW.size(0), B = XW.size(1), h = W_h.size(0), gh = W_h.size(1), G = gh / h;
  TORCH_CHECK(steps > 0, "recurrence needs at least one time step");
  auto empty = [&](at::IntArrayRef sizes) { return recycled_empty(sizes, XW.options()); };
  const Tensor Hs = empty({steps, B, h});
  const T *xw = XW.const_data_ptr<T>(), *w = W_h.const_data_ptr<T>(), *h0 = H0.const_data_ptr<T>();
  T* hs = Hs.mutable_data_ptr<T>();
  auto h_prev = [&](int64_t t) { return t ? hs + (t - 1) * B * h : h0; };  // (B, h)
  auto x_at = [&](int64_t row, int64_t u) { return Gates<const T>{xw + row * gh + u, h}; };

  if (cell == "gru-book") {  // saved: R, Z (grouped), H~ and R * H_{t-1}
    const Tensor S = empty({steps, B, 2 * h}), N = empty({steps, B, h}), RH = empty({steps, B, h});
    T *sv = S.mutable_data_ptr<T>(), *nv = N.mutable_data_ptr<T>(), *rh = RH.mutable_data_ptr<T>();
    run_team(h, [&](int p, int P) {
      const Slice s = unit_slice(h, p, P);
      const StepGemm<T> gemm_rz(gate_columns(w, gh, h, 2, s), 2 * s.n, false, B, 2 * s.n, h, kPack0);
      const StepGemm<T> gemm_n(w + 2 * h + s.u0, gh, false, B, s.n, h, kPack1);  // W_h[:, 2h + slice]
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
    return {{Hs, Hs[steps - 1].clone()}, {Hs, S, N, RH}};
  }
  TORCH_CHECK(cell == "rnn" || cell == "lstm" || cell == "gru", "unknown cell ", cell);
  const bool lstm = cell == "lstm", gru = cell == "gru";
  // saved (grouped): lstm the gates I, F, C~, O, gru R, Z and a_n + b_hn; then lstm C_t, gru N
  const Tensor A = lstm || gru ? empty({steps, B, gh}) : Hs;
  const Tensor S2 = lstm || gru ? empty({steps, B, h}) : Tensor();
  T *g = A.mutable_data_ptr<T>(), *s2 = S2.defined() ? S2.mutable_data_ptr<T>() : nullptr;
  run_team(h, [&](int p, int P) {
    const Slice s = unit_slice(h, p, P);
    const StepGemm<T> gemm(gate_columns(w, gh, h, G, s), G * s.n, false, B, G * s.n, h, kPack0);
    for (int64_t t = 0; t < steps; ++t) {
      if (t) team_barrier();  // H_{t-1} complete
      gemm(h_prev(t), h, g + t * B * gh + G * s.u0, gh);  // rnn: straight into Hs
      for (int64_t b = 0, row = t * B; b < B; ++b, ++row)
        for_groups(s, G, [&](int64_t u, int64_t sz) {
          T* hout = hs + row * h + u;
          if (lstm) {
            const T* c_prev = t ? s2 + (row - B) * h + u : C0.const_data_ptr<T>() + b * h + u;
            lstm_fwd(sz, x_at(row, u), Gates<T>{g + row * gh + G * u, sz}, c_prev, s2 + row * h + u, hout);
          } else if (gru) {
            gru_fwd(sz, x_at(row, u), Gates<T>{g + row * gh + G * u, sz}, b_hn.const_data_ptr<T>() + u,
                    h_prev(t) + b * h + u, s2 + row * h + u, hout);
          } else {
            rnn_fwd(sz, xw + row * gh + u, hout, hout);
          }
        });
    }
  });
  if (lstm) return {{Hs, Hs[steps - 1].clone(), S2[steps - 1].clone()}, {Hs, A, S2}};
  if (gru) return {{Hs, Hs[steps - 1].clone()}, {Hs, A, S2}};
  return {{Hs, Hs[steps - 1].clone()}, {Hs}};
}

// grads = (dHs, dH_T[, dC_T]); returns (dXW, dW_h, dH0[, dC0 for lstm | db_hn for gru]).
template <typename T>
TensorList backward_impl(const std::string& cell, const TensorList& saved, const Tensor& W_h,
                         const Tensor& H0, const Tensor& C0, const TensorList& grads) {
  const Tensor& Hs = saved[0];
  const int64_t steps = Hs.size(0), B = Hs.size(1), h = W_h.size(0), gh = W_h.size(1), G = gh / h;
  auto empty = [&](at::IntArrayRef sizes) { return recycled_empty(sizes, Hs.options()); };
  const Tensor dHs = grads[0].contiguous();
  const Tensor dh_rec = grads[1].contiguous().clone();  // dH_t arriving through W_h (dH_T at the top)
  const Tensor dXW = empty({steps, B, gh}), dW = empty({h, gh});
  const T *w = W_h.const_data_ptr<T>(), *hs = Hs.const_data_ptr<T>(), *dhs = dHs.const_data_ptr<T>();
  const T* h0 = H0.const_data_ptr<T>();
  T *dxw = dXW.mutable_data_ptr<T>(), *dr = dh_rec.mutable_data_ptr<T>();
  auto h_prev = [&](int64_t t) { return t ? hs + (t - 1) * B * h : h0; };
  auto dx_at = [&](int64_t row, int64_t u) { return Gates<T>{dxw + row * gh + u, h}; };

  if (cell == "gru-book") {
    const Tensor dh_dir = at::zeros_like(dh_rec), drh = empty({B, h});  // dh_dir: Z * dH_t
    const T *sv = saved[1].const_data_ptr<T>(), *nv = saved[2].const_data_ptr<T>();
    T *q = drh.mutable_data_ptr<T>(), *dd = dh_dir.mutable_data_ptr<T>();
    run_team(h, [&](int p, int P) {
      const Slice s = unit_slice(h, p, P);
      // d(R * H_{t-1})[:, slice] = dH~_pre W_h[slice, 2h:]^T
      // dH_{t-1}[:, slice] = d[R Z]_pre W_h[slice, :2h]^T
      const StepGemm<T> gemm_n(w + s.u0 * gh + 2 * h, gh, true, B, s.n, h, kPack0);
      const StepGemm<T> gemm_rz(w + s.u0 * gh, gh, true, B, s.n, 2 * h, kPack1);
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
        team_barrier();  // dR_pre complete
        gemm_rz(dxw + t * B * gh, gh, dr + s.u0, h);
      }
    });
    weight_grad(dW.narrow(1, 0, 2 * h), H0, Hs, dXW.narrow(2, 0, 2 * h));
    Tensor dW_n = dW.narrow(1, 2 * h, h);  // (R * H_{t-1})^T dH~_pre
    at::mm_out(dW_n, saved[3].flatten(0, 1).t(), dXW.narrow(2, 2 * h, h).flatten(0, 1));
    return {dXW, dW, dh_rec + dh_dir};
  }
  const bool lstm = cell == "lstm", gru = cell == "gru";
  const Tensor dC = lstm ? grads[2].contiguous().clone() : Tensor();
  const Tensor dh_dir = gru ? at::zeros_like(dh_rec) : Tensor();
  const Tensor dA = gru ? empty({steps, B, gh}) : dXW;  // dA = dXW except gru's block n
  const T* g = lstm || gru ? saved[1].const_data_ptr<T>() : nullptr;
  const T* s2 = lstm || gru ? saved[2].const_data_ptr<T>() : nullptr;  // lstm C_t, gru N
  T* da = dA.mutable_data_ptr<T>();
  run_team(h, [&](int p, int P) {
    const Slice s = unit_slice(h, p, P);
    const StepGemm<T> gemm(w + s.u0 * gh, gh, true, B, s.n, gh, kPack0);  // dA_t W_h[slice, :]^T
    for (int64_t t = steps - 1; t >= 0; --t) {
      for (int64_t b = 0, row = t * B; b < B; ++b, ++row)
        for_groups(s, G, [&](int64_t u, int64_t sz) {
          const int64_t o = row * h + u, v = b * h + u;  // this group in a (T, B, h) and a (B, h) array
          if (lstm) {
            const T* c_prev = t ? s2 + o - B * h : C0.const_data_ptr<T>() + v;
            lstm_bwd(sz, Gates<const T>{g + row * gh + 4 * u, sz}, c_prev, s2 + o, dhs + o, dr + v,
                     dC.mutable_data_ptr<T>() + v, dx_at(row, u));
          } else if (gru) {
            gru_bwd(sz, Gates<const T>{g + row * gh + 3 * u, sz}, s2 + o, h_prev(t) + v, dhs + o, dr + v,
                    dh_dir.mutable_data_ptr<T>() + v, dx_at(row, u), Gates<T>{da + row * gh + u, h});
          } else {
            rnn_bwd(sz, hs + o, dhs + o, dr + v, dxw + o);
          }
        });
      team_barrier();  // dA_t complete
      gemm(da + t * B * gh, gh, dr + s.u0, h);
    }
  });
  weight_grad(dW, H0, Hs, dA);
  if (lstm) return {dXW, dW, dh_rec, dC};
  if (gru) return {dXW, dW, dh_rec + dh_dir, dA.narrow(2, 2 * h, h).sum({0, 1})};
  return {dXW, dW, dh_rec};
}

std::tuple<TensorList, TensorList> forward(const std::string& cell, const Tensor& XW,
                                           const Tensor& W_h, const Tensor& H0,
                                           const std::optional<Tensor>& C0,
                                           const std::optional<Tensor>& b_hn) {
  const Tensor c0 = C0 ? C0->contiguous() : Tensor(), bhn = b_hn ? b_hn->contiguous() : Tensor();
  const int64_t h = W_h.size(0), G = cell == "lstm" ? 4 : cell == "rnn" ? 1 : 3;
  TORCH_CHECK(XW.dim() == 3 && W_h.dim() == 2 && W_h.size(1) == G * h && XW.size(2) == G * h,
              "recurrence: XW must be (T, B, G*h) and W_h (h, G*h)");
  TORCH_CHECK(H0.sizes() == at::IntArrayRef({XW.size(1), h}), "recurrence: H0 must be (B, h)");
  TORCH_CHECK(cell != "lstm" || (c0.defined() && c0.sizes() == H0.sizes()), "recurrence: C0 must be (B, h)");
  TORCH_CHECK(cell != "gru" || (bhn.defined() && bhn.numel() == h), "recurrence: b_hn must be (h,)");
  return AT_DISPATCH_FLOATING_TYPES(XW.scalar_type(), "zoo_recurrence_forward", [&] {
    return forward_impl<scalar_t>(cell, XW.contiguous(), W_h.contiguous(), H0.contiguous(), c0, bhn);
  });
}

TensorList backward(const std::string& cell, const TensorList& saved, const Tensor& W_h,
                    const Tensor& H0, const std::optional<Tensor>& C0, const TensorList& grads) {
  const Tensor c0 = C0 ? C0->contiguous() : Tensor();
  return AT_DISPATCH_FLOATING_TYPES(W_h.scalar_type(), "zoo_recurrence_backward", [&] {
    return backward_impl<scalar_t>(cell, saved, W_h.contiguous(), H0.contiguous(), c0, grads);
  });
}

}  // namespace
}  // namespace zoo

TORCH_LIBRARY(zoo_kernels, m) {
  m.def("recurrence_forward(str cell, Tensor XW, Tensor W_h, Tensor H0, Tensor? C0, Tensor? b_hn)"
        " -> (Tensor[], Tensor[])",
        &zoo::forward);
  m.def("recurrence_backward(str cell, Tensor[] saved, Tensor W_h, Tensor H0, Tensor? C0,"
        " Tensor[] grads) -> Tensor[]",
        &zoo::backward);
}
