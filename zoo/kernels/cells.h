// Per-row cell maths shared by the training kernels and the sampler.
//
// Each function updates n consecutive hidden units of one batch row after the recurrent matmul has
// been done elsewhere: one call is one fused elementwise pass, and the loops over j vectorise at -O3.
// Per-unit arrays (states, dH) point at the first unit. Gate arrays are Gates views: gate k (PyTorch's
// order: lstm i, f, g, o; gru r, z, n) of unit j is at p[k * stride + j].
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// Every loop below touches index j only, so in-place calls (an output aliasing an input) are safe; this
// tells the compiler so, which lets it vectorise without runtime alias checks over a dozen pointers.
#if defined(__clang__)
#define ZOO_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define ZOO_IVDEP _Pragma("GCC ivdep")
#else
#define ZOO_IVDEP
#endif

namespace zoo {

template <typename T>
struct Gates {
  T* p;
  int64_t stride;
  T* operator[](int64_t k) const { return p + k * stride; }
};

// exp for float as plain arithmetic, so that GCC vectorises the loops that call it (std::exp is a
// scalar libm call without -ffast-math). Cephes' polynomial on [-ln2/2, ln2/2]; rel. error ~2e-7.
inline float vexp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);  // std::fmin/fmax would block vectorisation
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;      // x - n ln2, in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double vexp(double x) { return std::exp(x); }  // float64 is only for gradcheck: accuracy first

template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + vexp(-x)); }
template <typename T> inline T tanh_(T x) { return T(2) / (T(1) + vexp(T(-2) * x)) - T(1); }

// ---- rnn: H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h); `a` = H_{t-1} W_hh
template <typename T>
inline void rnn_fwd(int64_t n, const T* xw, const T* a, T* hout) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) hout[j] = tanh_(xw[j] + a[j]);
}
// dA = dH * (1 - H_t^2), with dH = dHs_t + dH_rec (dH_{t+1} carried back through W_hh)
template <typename T>
inline void rnn_bwd(int64_t n, const T* hout, const T* dh_out, const T* dh_rec, T* da) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j)
    da[j] = (dh_out[j] + dh_rec[j]) * (T(1) - hout[j] * hout[j]);
}

// ---- lstm: g holds H_{t-1} W_h on entry and the activated gates I, F, C~, O on exit
template <typename T>
inline void lstm_fwd(int64_t n, Gates<const T> xw, Gates<T> g, const T* c_prev, T* c, T* hout) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) {
    const T i = sigmoid(xw[0][j] + g[0][j]);   // I = sigma(X W_xi + H W_hi + b_i)
    const T f = sigmoid(xw[1][j] + g[1][j]);   // F = sigma(X W_xf + H W_hf + b_f)
    const T cc = tanh_(xw[2][j] + g[2][j]);    // C~ = tanh(X W_xc + H W_hc + b_c)
    const T o = sigmoid(xw[3][j] + g[3][j]);   // O = sigma(X W_xo + H W_ho + b_o)
    const T ct = f * c_prev[j] + i * cc;       // C_t = F * C_{t-1} + I * C~
    g[0][j] = i, g[1][j] = f, g[2][j] = cc, g[3][j] = o;
    c[j] = ct;
    hout[j] = o * tanh_(ct);                   // H_t = O * tanh(C_t)
  }
}
// `dc` holds dC_t on entry and dC_{t-1} on exit; writes dA_t, the gradient of the pre-activations
template <typename T>
inline void lstm_bwd(int64_t n, Gates<const T> g, const T* c_prev, const T* c, const T* dh_out,
                     const T* dh_rec, T* dc, Gates<T> da) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) {
    const T i = g[0][j], f = g[1][j], cc = g[2][j], o = g[3][j], t = tanh_(c[j]);
    const T dh = dh_out[j] + dh_rec[j];
    const T dct = dc[j] + dh * o * (T(1) - t * t);
    da[0][j] = dct * cc * i * (T(1) - i);
    da[1][j] = dct * c_prev[j] * f * (T(1) - f);
    da[2][j] = dct * i * (T(1) - cc * cc);
    da[3][j] = dh * t * o * (T(1) - o);
    dc[j] = dct * f;
  }
}

// ---- gru, reset-after (PyTorch): s holds H_{t-1} W_h (blocks r, z, n) on entry; R, Z, a_n + b_hn on exit
template <typename T>
inline void gru_fwd(int64_t n, Gates<const T> xw, Gates<T> s, const T* bhn, const T* h_prev, T* nout,
                    T* hout) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) {
    const T r = sigmoid(xw[0][j] + s[0][j]);   // R = sigma(X W_xr + H W_hr + b_r)
    const T z = sigmoid(xw[1][j] + s[1][j]);   // Z = sigma(X W_xz + H W_hz + b_z)
    const T hn = s[2][j] + bhn[j];
    const T nn = tanh_(xw[2][j] + r * hn);     // N = tanh(X W_xn + b_in + R * (H W_hn + b_hn))
    s[0][j] = r, s[1][j] = z, s[2][j] = hn;
    nout[j] = nn;
    hout[j] = nn + z * (h_prev[j] - nn);       // H_t = Z * H_{t-1} + (1 - Z) * N
  }
}
// dh = dHs_t + dh_rec + dh_dir, where dh_dir (in: from step t+1, out: for step t-1) is the direct
// path dH_{t-1} += Z * dH_t. Writes dXW_t and dA_t, which differ only in block n: dA_n = R * dN_pre.
template <typename T>
inline void gru_bwd(int64_t n, Gates<const T> s, const T* nn, const T* h_prev, const T* dh_out,
                    const T* dh_rec, T* dh_dir, Gates<T> dxw, Gates<T> da) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) {
    const T r = s[0][j], z = s[1][j], hn = s[2][j];
    const T dh = dh_out[j] + dh_rec[j] + dh_dir[j];
    const T dz = dh * (h_prev[j] - nn[j]) * z * (T(1) - z);
    const T dn = dh * (T(1) - z) * (T(1) - nn[j] * nn[j]);
    const T dr = dn * hn * r * (T(1) - r);
    dxw[0][j] = dr, dxw[1][j] = dz, dxw[2][j] = dn;
    da[0][j] = dr, da[1][j] = dz, da[2][j] = dn * r;
    dh_dir[j] = dh * z;
  }
}

// ---- gru-book, reset-before (the book's form): two stages around the second matmul.
// Stage 1: s holds H_{t-1} W_h[:, :2h] (blocks r, z) on entry and R, Z on exit; rh = R * H_{t-1}.
template <typename T>
inline void grub_fwd1(int64_t n, Gates<const T> xw, Gates<T> s, const T* h_prev, T* rh) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) {
    const T r = sigmoid(xw[0][j] + s[0][j]);   // R = sigma(X W_xr + H W_hr + b_r)
    s[1][j] = sigmoid(xw[1][j] + s[1][j]);     // Z = sigma(X W_xz + H W_hz + b_z)
    s[0][j] = r;
    rh[j] = r * h_prev[j];
  }
}
// Stage 2: hc holds (R * H_{t-1}) W_h[:, 2h:] on entry and H~ on exit.
template <typename T>
inline void grub_fwd2(int64_t n, Gates<const T> xw, const T* z, T* hc, const T* h_prev, T* hout) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) {
    const T c = tanh_(xw[2][j] + hc[j]);       // H~ = tanh(X W_xh + (R * H) W_hh + b_h)
    hc[j] = c;
    hout[j] = c + z[j] * (h_prev[j] - c);      // H_t = Z * H_{t-1} + (1 - Z) * H~
  }
}
// Backward stage 1: dZ and dH~ pre-activations into dxw; dh_dir gets the direct Z * dH_t.
template <typename T>
inline void grub_bwd1(int64_t n, const T* z, const T* hc, const T* h_prev, const T* dh_out,
                      const T* dh_rec, T* dh_dir, Gates<T> dxw) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) {
    const T dh = dh_out[j] + dh_rec[j] + dh_dir[j];
    dxw[1][j] = dh * (h_prev[j] - hc[j]) * z[j] * (T(1) - z[j]);
    dxw[2][j] = dh * (T(1) - z[j]) * (T(1) - hc[j] * hc[j]);
    dh_dir[j] = dh * z[j];
  }
}
// Backward stage 2: `drh` = dH~_pre W_h[:, 2h:]^T is the gradient of R * H_{t-1}.
template <typename T>
inline void grub_bwd2(int64_t n, const T* r, const T* h_prev, const T* drh, T* dh_dir, Gates<T> dxw) {
  ZOO_IVDEP for (int64_t j = 0; j < n; ++j) {
    dxw[0][j] = drh[j] * h_prev[j] * r[j] * (T(1) - r[j]);
    dh_dir[j] += drh[j] * r[j];
  }
}

}  // namespace zoo
