// Tile-based front-to-back alpha compositing of projected 2D Gaussians on the CPU, forward and
// analytic backward, with gsplat 1.4.0's per-pixel rules (see rasterize_torch.py):
//   sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,  d = mean2d - pixel centre (+0.5)
//   skip sigma < 0; alpha = min(0.999, o exp(-sigma)); skip alpha < 1/255;
//   stop *before* the Gaussian that would bring transmittance to <= 1e-4.
// Projection and the (tile, depth)-sorted intersection list stay in PyTorch; this file only
// replaces the per-pixel loop, which is where all the time goes.
//
// Speed: tiles run in parallel (OpenMP, dynamic schedule: tile lists differ a lot in length).
// Inside a tile the loop is Gaussian-outer, pixel-inner, restricted to the pixel box where the
// Gaussian can reach alpha >= 1/255 (a few pixels for most Gaussians), which keeps depth order
// per pixel and skips ~all exp() calls that would be culled anyway. Per-Gaussian gradients are
// summed over a tile's pixels in registers and added to a per-thread buffer (no atomics).
// Flush-to-zero is set per thread: denormal floats made the first CPU version up to 40x slower.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/Parallel.h>

#include <atomic>
#include <cstring>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define MODGS_HAVE_FTZ 1
#endif

namespace {

constexpr int TILE = 16;
constexpr int NPIX = TILE * TILE;
constexpr double ALPHA_MIN = 1.0 / 255.0;
constexpr double ALPHA_MAX = 0.999;
constexpr double T_MIN = 1e-4;

// Flush denormals to zero while a worker runs, restoring the thread's mode afterwards (the
// threads belong to torch's pool).
struct FlushDenormals {
#ifdef MODGS_HAVE_FTZ
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Dynamic scheduling over tiles on torch's intra-op pool (OpenMP in the standard builds): one
// task per worker, each pulling tiles from a shared counter, because tile lists differ a lot in
// length. fn(worker, tile).
template <typename Fn>
void for_each_tile(int64_t n_tiles, int64_t n_workers, Fn fn) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, n_workers, 1, [&](int64_t w0, int64_t w1) {
    FlushDenormals ftz;
    for (int64_t w = w0; w < w1; ++w) {
      for (int64_t t = next++; t < n_tiles; t = next++) fn(w, t);
    }
  });
}

// SIMD packs through GCC/Clang vector extensions (AVX2 when built with -mavx2, SSE pairs
// otherwise): a 16-pixel tile row is 2 packs of 8 floats or 4 packs of 4 doubles. The compiler's
// auto-vectorizer left these loops scalar, hence the explicit packs.
template <typename T>
struct Pack;
template <>
struct Pack<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t M __attribute__((vector_size(32)));
  static constexpr int L = 8;
};
template <>
struct Pack<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef int64_t M __attribute__((vector_size(32)));
  static constexpr int L = 4;
};

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void store(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}
template <typename V, typename T>
inline V bcast(T x) {
  return V{} + x;
}
template <typename M>
inline bool any(M m) {
  for (size_t i = 0; i < sizeof(M) / sizeof(m[0]); ++i)
    if (m[i]) return true;
  return false;
}
template <typename V>
inline auto hsum(V v) {
  auto s = v[0];
  for (size_t i = 1; i < sizeof(V) / sizeof(v[0]); ++i) s += v[i];
  return s;
}

// exp(x) for x in [-87, 0]. float: Cephes' expf polynomial on x - n ln2 times 2^n built in the
// exponent bits (relative error ~2e-7, like the CUDA __expf that gsplat uses). double (tests):
// the library exp per lane, so float64 results are exact references.
inline Pack<float>::V exp_neg(Pack<float>::V x) {
  typedef Pack<float>::V V;
  typedef Pack<float>::M M;
  x = x < -87.0f ? bcast<V>(-87.0f) : x;
  const V y = x * 1.44269504088896341f + 0.5f;
  M n = __builtin_convertvector(y, M);              // truncation
  n += __builtin_convertvector(n, V) > y;           // -> floor (comparison gives -1)
  const V nf = __builtin_convertvector(n, V);
  const V r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  V p = bcast<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * (V)((n + 127) << 23);
}
inline Pack<double>::V exp_neg(Pack<double>::V x) {
  for (int i = 0; i < 4; ++i) x[i] = std::exp(x[i]);
  return x;
}

template <typename T>
struct Splat {
  T mx, my, a, b, c, o, thr;  // thr: sigma above which alpha < 1/255 (with a rounding margin)
  int y0, y1;                  // tile-local rows that can reach alpha >= 1/255
  bool full;                   // degenerate conic: evaluate whole rows
};

// Rows of {sigma <= log(255 o)} inside the tile at row offset oy; false if the Gaussian misses it.
template <typename T>
inline bool make_splat(Splat<T>& s, const T* m2d, const T* con, T opac, int oy) {
  if (!(opac * T(255.0) >= T(1.0))) return false;  // alpha < 1/255 everywhere
  s.mx = m2d[0], s.my = m2d[1], s.a = con[0], s.b = con[1], s.c = con[2], s.o = opac;
  s.thr = std::log(opac * T(255.0)) + T(1e-3);
  const T det = s.a * s.c - s.b * s.b;
  s.full = !(det > T(0)) || !(s.a > T(0)) || !(s.c > T(0));
  if (s.full) {  // never produced by the projection, handled for safety
    s.y0 = 0, s.y1 = TILE;
    return true;
  }
  // The ellipse 0.5 d^T Q d <= thr spans |dy| <= sqrt(2 thr Q^-1_yy); pixel i's centre is o + i + 0.5.
  const T hy = std::sqrt(T(2) * s.thr * s.a / det) + T(1);
  s.y0 = std::max(0, (int)std::floor(s.my - hy - T(oy) - T(0.5)));
  s.y1 = std::min(TILE, (int)std::ceil(s.my + hy - T(oy) - T(0.5)) + 1);
  return s.y0 < s.y1;
}

// Whether the row at offset dy = my - pixel centre y meets the ellipse at all (for some dx,
// 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= thr), with a margin for rounding.
template <typename T>
inline bool row_hit(const Splat<T>& s, T dy) {
  return s.full || s.b * s.b * dy * dy - s.a * (s.c * dy * dy - T(2) * s.thr) >= -T(1e-3) * s.a;
}

// Per-pixel state is structure-of-arrays over the tile's 256 pixels (features as [D][256]).
// `done` and `last` are kept in T so that they share the packs' lane layout. DC > 0 fixes the
// feature count at compile time (the common 1, 3, 4); DC = 0 takes it at run time.
template <typename T, int DC>
void forward_kernel(const T* means2d, const T* conics, const T* opac, const T* feats, int64_t Drt,
                    const int64_t* offsets, const int64_t* ids, int64_t tiles_x, int64_t tiles_y,
                    int64_t W, int64_t H, T* out, T* T_out, int32_t* last_out, int64_t n_workers) {
  typedef typename Pack<T>::V V;
  typedef typename Pack<T>::M M;
  constexpr int L = Pack<T>::L;
  const int64_t D = DC > 0 ? DC : Drt;
  const int64_t n_tiles = tiles_x * tiles_y;
  const int64_t per_worker = NPIX * (D + 3);
  std::vector<T> scratch(n_workers * per_worker);
  V iota;
  for (int i = 0; i < L; ++i) iota[i] = T(i);
  for_each_tile(n_tiles, n_workers, [&](int64_t wk, int64_t t) {
    T* acc = scratch.data() + wk * per_worker;
    T* Tr = acc + NPIX * D;
    T* done = Tr + NPIX;
    T* last = done + NPIX;
    const int ox = (int)((t % tiles_x) * TILE), oy = (int)((t / tiles_x) * TILE);
    const int64_t k0 = offsets[t], k1 = offsets[t + 1];
    std::fill(acc, acc + NPIX * D, T(0));
    std::fill(Tr, Tr + NPIX, T(1));
    std::fill(done, done + NPIX, T(0));
    std::fill(last, last + NPIX, T(k1 - k0));
    int64_t n_done = 0;
    const V zero{}, one = bcast<V>(T(1));
    for (int64_t k = k0; k < k1 && n_done < NPIX; ++k) {
      const int64_t g = ids[k];
      Splat<T> s;
      if (!make_splat(s, means2d + 2 * g, conics + 3 * g, opac[g], oy)) continue;
      const T* f = feats + g * D;
      const V kl = bcast<V>(T(k - k0)), thr = bcast<V>(s.thr);
      for (int py = s.y0; py < s.y1; ++py) {
        const T dy = s.my - (T(oy + py) + T(0.5));
        if (!row_hit(s, dy)) continue;
        const T hcy = T(0.5) * s.c * dy * dy, bdy = s.b * dy, ha = T(0.5) * s.a;
        const int row = py * TILE;
        for (int c = 0; c < TILE; c += L) {
          const V dx = (s.mx - (T(ox + c) + T(0.5))) - iota;
          const V sigma = hcy + dx * (ha * dx + bdy);
          V sg = sigma < T(0) ? zero : sigma;
          sg = sg > thr ? thr : sg;
          V alpha = s.o * exp_neg(-sg);
          alpha = alpha > T(ALPHA_MAX) ? bcast<V>(T(ALPHA_MAX)) : alpha;
          const V dn = load<V>(done + row + c);
          const M ok = (dn == T(0)) & (sigma >= T(0)) & (sigma <= thr) & (alpha >= T(ALPHA_MIN));
          if (!any(ok)) continue;
          const V Tp = load<V>(Tr + row + c);
          const V nT = Tp * (T(1) - alpha);
          const M sat = ok & (nT <= T(T_MIN));
          const M use = ok & ~sat;
          const V w = use ? alpha * Tp : zero;
          store(Tr + row + c, use ? nT : Tp);
          if (any(sat)) {
            store(done + row + c, sat ? one : dn);
            store(last + row + c, sat ? kl : load<V>(last + row + c));
            for (int i = 0; i < L; ++i) n_done += sat[i] != 0;
          }
          for (int64_t d = 0; d < D; ++d) {
            T* ad = acc + d * NPIX + row + c;
            store(ad, load<V>(ad) + w * f[d]);
          }
        }
      }
    }
    for (int py = 0; py < TILE && oy + py < H; ++py) {
      for (int px = 0; px < TILE && ox + px < W; ++px) {
        const int p = py * TILE + px;
        const int64_t q = (int64_t)(oy + py) * W + ox + px;
        for (int64_t d = 0; d < D; ++d) out[q * D + d] = acc[d * NPIX + p];
        T_out[q] = Tr[p];
        last_out[q] = (int32_t)last[p];
      }
    }
  });
}

// Back to front over each tile's list, as gsplat's backward: the transmittance in front of a
// Gaussian is recovered as T_after / (1 - alpha), and `behind` holds the colour composited behind
// it. Each (tile, Gaussian) pair writes its own gradient row, summed per Gaussian afterwards in a
// fixed order, so results do not depend on the thread schedule.
template <typename T, int DC>
void backward_kernel(const T* means2d, const T* conics, const T* opac, const T* feats, int64_t Drt,
                     const int64_t* offsets, const int64_t* ids, int64_t tiles_x, int64_t tiles_y,
                     int64_t W, int64_t H, const T* T_final, const int32_t* last_in,
                     const T* g_out, const T* g_T, T* g_pair /* [pairs, 6 + D] */, int64_t n_workers) {
  typedef typename Pack<T>::V V;
  typedef typename Pack<T>::M M;
  constexpr int L = Pack<T>::L;
  const int64_t D = DC > 0 ? DC : Drt;
  const int64_t n_tiles = tiles_x * tiles_y;
  const int64_t S = 6 + D;  // per-pair slots: means2d (2), conic (3), opacity (1), features (D)
  const int64_t per_worker = NPIX * (3 + 2 * D);
  std::vector<T> scratch(n_workers * per_worker);
  V iota;
  for (int i = 0; i < L; ++i) iota[i] = T(i);
  for_each_tile(n_tiles, n_workers, [&](int64_t wk, int64_t t) {
    const int64_t k0 = offsets[t], k1 = offsets[t + 1];
    if (k0 == k1) return;
    T* Tr = scratch.data() + wk * per_worker;
    T* gTT = Tr + NPIX;  // dL/dT_final * T_final
    T* last = gTT + NPIX;
    T* behind = last + NPIX;
    T* go = behind + NPIX * D;
    const int ox = (int)((t % tiles_x) * TILE), oy = (int)((t / tiles_x) * TILE);
    int32_t max_last = 0;
    for (int py = 0; py < TILE; ++py) {
      for (int px = 0; px < TILE; ++px) {
        const int p = py * TILE + px;
        if (oy + py < H && ox + px < W) {
          const int64_t q = (int64_t)(oy + py) * W + ox + px;
          Tr[p] = T_final[q];
          gTT[p] = g_T[q] * T_final[q];
          last[p] = T(last_in[q]);
          max_last = std::max(max_last, last_in[q]);
          for (int64_t d = 0; d < D; ++d) go[d * NPIX + p] = g_out[q * D + d];
        } else {  // padding pixels outside the image contribute nothing
          Tr[p] = T(1), gTT[p] = T(0), last[p] = T(0);
          for (int64_t d = 0; d < D; ++d) go[d * NPIX + p] = T(0);
        }
      }
    }
    std::fill(behind, behind + NPIX * D, T(0));
    const V zero{};
    std::vector<V> gf_dyn(DC > 0 ? 0 : D);
    V gf_fix[DC > 0 ? DC : 1];
    V* gf = DC > 0 ? gf_fix : gf_dyn.data();
    for (int64_t k = k0 + max_last - 1; k >= k0; --k) {
      const int64_t g = ids[k];
      Splat<T> s;
      if (!make_splat(s, means2d + 2 * g, conics + 3 * g, opac[g], oy)) continue;
      const T* f = feats + g * D;
      const V kl = bcast<V>(T(k - k0)), thr = bcast<V>(s.thr);
      V g_mx{}, g_my{}, g_a{}, g_b{}, g_c{}, g_o{};
      for (int64_t d = 0; d < D; ++d) gf[d] = zero;
      bool hit = false;
      for (int py = s.y0; py < s.y1; ++py) {
        const T dy = s.my - (T(oy + py) + T(0.5));
        if (!row_hit(s, dy)) continue;
        const T hcy = T(0.5) * s.c * dy * dy, bdy = s.b * dy, ha = T(0.5) * s.a, cdy = s.c * dy;
        const int row = py * TILE;
        for (int c = 0; c < TILE; c += L) {
          const V dx = (s.mx - (T(ox + c) + T(0.5))) - iota;
          const V sigma = hcy + dx * (ha * dx + bdy);
          V sg = sigma < T(0) ? zero : sigma;
          sg = sg > thr ? thr : sg;
          const V vis = exp_neg(-sg);
          const V ov = s.o * vis;
          const V alpha = ov > T(ALPHA_MAX) ? bcast<V>(T(ALPHA_MAX)) : ov;
          const M ok = (kl < load<V>(last + row + c)) & (sigma >= T(0)) & (sigma <= thr) & (alpha >= T(ALPHA_MIN));
          if (!any(ok)) continue;
          hit = true;
          const V am = ok ? alpha : zero;
          const V one_m = T(1) - am;
          const V Tk = load<V>(Tr + row + c) / one_m;  // transmittance in front of this Gaussian
          store(Tr + row + c, Tk);
          const V w = am * Tk;
          V ga = zero;
          for (int64_t d = 0; d < D; ++d) {
            T* bp = behind + d * NPIX + row + c;
            const V bd = load<V>(bp), gd = load<V>(go + d * NPIX + row + c);
            gf[d] += w * gd;
            ga += (f[d] - bd) * gd;
            store(bp, am * f[d] + one_m * bd);
          }
          const V g_alpha = ga * Tk - load<V>(gTT + row + c) / one_m;
          const V m = (ok & (ov <= T(ALPHA_MAX))) ? g_alpha : zero;
          const V g_sigma = -ov * m;
          g_o += vis * m;
          g_mx += g_sigma * (s.a * dx + bdy);
          g_my += g_sigma * (s.b * dx + cdy);
          g_a += g_sigma * dx * dx;
          g_b += g_sigma * dx * dy;
          g_c += g_sigma * dy * dy;
        }
      }
      if (!hit) continue;
      T* o = g_pair + k * S;
      o[0] = hsum(g_mx), o[1] = hsum(g_my), o[2] = T(0.5) * hsum(g_a), o[3] = hsum(g_b);
      o[4] = T(0.5) * hsum(g_c), o[5] = hsum(g_o);
      for (int64_t d = 0; d < D; ++d) o[6 + d] = hsum(gf[d]);
    }
  });
}

void check_inputs(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& opac,
                  const torch::Tensor& feats, const torch::Tensor& offsets, const torch::Tensor& ids) {
  TORCH_CHECK(!means2d.is_cuda(), "composite_cpu takes CPU tensors");
  TORCH_CHECK(means2d.is_contiguous() && conics.is_contiguous() && opac.is_contiguous() && feats.is_contiguous(),
              "composite_cpu: inputs must be contiguous");
  TORCH_CHECK(offsets.scalar_type() == torch::kLong && ids.scalar_type() == torch::kLong, "offsets/ids must be int64");
  TORCH_CHECK(means2d.scalar_type() == conics.scalar_type() && conics.scalar_type() == opac.scalar_type() &&
                  opac.scalar_type() == feats.scalar_type(),
              "composite_cpu: mixed dtypes");
}

}  // namespace

std::vector<torch::Tensor> composite_forward(torch::Tensor means2d, torch::Tensor conics, torch::Tensor opac,
                                             torch::Tensor feats, torch::Tensor offsets, torch::Tensor ids,
                                             int64_t tiles_x, int64_t tiles_y, int64_t W, int64_t H) {
  check_inputs(means2d, conics, opac, feats, offsets, ids);
  const int64_t D = feats.size(1);
  auto out = torch::empty({H, W, D}, feats.options());
  auto T_out = torch::empty({H, W}, feats.options());
  auto last = torch::empty({H, W}, feats.options().dtype(torch::kInt));
  const int64_t n_workers = at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "composite_forward", [&] {
    auto kernel = D == 4 ? forward_kernel<scalar_t, 4> : D == 3 ? forward_kernel<scalar_t, 3> : D == 1 ? forward_kernel<scalar_t, 1> : forward_kernel<scalar_t, 0>;
    kernel(means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), opac.data_ptr<scalar_t>(),
                             feats.data_ptr<scalar_t>(), D, offsets.data_ptr<int64_t>(), ids.data_ptr<int64_t>(),
                             tiles_x, tiles_y, W, H, out.data_ptr<scalar_t>(), T_out.data_ptr<scalar_t>(),
                             last.data_ptr<int32_t>(), n_workers);
  });
  return {out, T_out, last};
}

std::vector<torch::Tensor> composite_backward(torch::Tensor means2d, torch::Tensor conics, torch::Tensor opac,
                                              torch::Tensor feats, torch::Tensor offsets, torch::Tensor ids,
                                              int64_t tiles_x, int64_t tiles_y, int64_t W, int64_t H,
                                              torch::Tensor T_final, torch::Tensor last, torch::Tensor g_out,
                                              torch::Tensor g_T) {
  check_inputs(means2d, conics, opac, feats, offsets, ids);
  g_out = g_out.contiguous();
  g_T = g_T.contiguous();
  const int64_t D = feats.size(1), N = feats.size(0);
  const int64_t n_workers = at::get_num_threads();
  auto g_pair = torch::zeros({ids.size(0), 6 + D}, feats.options());
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "composite_backward", [&] {
    auto kernel = D == 4 ? backward_kernel<scalar_t, 4> : D == 3 ? backward_kernel<scalar_t, 3> : D == 1 ? backward_kernel<scalar_t, 1> : backward_kernel<scalar_t, 0>;
    kernel(means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), opac.data_ptr<scalar_t>(),
           feats.data_ptr<scalar_t>(), D, offsets.data_ptr<int64_t>(), ids.data_ptr<int64_t>(), tiles_x, tiles_y,
           W, H, T_final.data_ptr<scalar_t>(), last.data_ptr<int32_t>(), g_out.data_ptr<scalar_t>(),
           g_T.data_ptr<scalar_t>(), g_pair.data_ptr<scalar_t>(), n_workers);
  });
  auto g = torch::zeros({N, 6 + D}, feats.options()).index_add_(0, ids, g_pair);
  return {g.slice(1, 0, 2), g.slice(1, 2, 5), g.select(1, 5), g.slice(1, 6, 6 + D)};
}

// Per-tile Gaussian lists, front to back: a counting sort of the (tile, Gaussian) pairs, visiting
// Gaussians in `order` (a stable argsort by depth), with the tile rectangle rule of
// rasterize_torch.tile_intersections: floor(m/16 - r/16) .. ceil(m/16 + r/16), clamped.
std::vector<torch::Tensor> tile_lists(torch::Tensor means2d, torch::Tensor radii, torch::Tensor order,
                                      int64_t tiles_x, int64_t tiles_y) {
  TORCH_CHECK(means2d.is_contiguous() && radii.is_contiguous() && order.is_contiguous(), "tile_lists: contiguous inputs");
  TORCH_CHECK(radii.scalar_type() == torch::kInt && order.scalar_type() == torch::kLong, "tile_lists: int32 radii, int64 order");
  const int64_t N = order.size(0), n_tiles = tiles_x * tiles_y;
  auto offsets = torch::zeros({n_tiles + 1}, torch::kLong);
  int64_t* off = offsets.data_ptr<int64_t>();
  const int32_t* rad = radii.data_ptr<int32_t>();
  const int64_t* ord = order.data_ptr<int64_t>();
  std::vector<int32_t> rect(4 * N);
  AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "tile_lists", [&] {
    const scalar_t* m = means2d.data_ptr<scalar_t>();
    const scalar_t tile = scalar_t(TILE);
    for (int64_t i = 0; i < N; ++i) {
      const int64_t g = ord[i];
      int32_t* r4 = &rect[4 * i];
      r4[0] = r4[1] = r4[2] = r4[3] = 0;
      if (rad[g] <= 0) continue;
      const scalar_t mx = m[2 * g] / tile, my = m[2 * g + 1] / tile, r = scalar_t(rad[g]) / tile;
      r4[0] = (int32_t)std::min<int64_t>(std::max<int64_t>((int64_t)std::floor(mx - r), 0), tiles_x);
      r4[1] = (int32_t)std::min<int64_t>(std::max<int64_t>((int64_t)std::ceil(mx + r), 0), tiles_x);
      r4[2] = (int32_t)std::min<int64_t>(std::max<int64_t>((int64_t)std::floor(my - r), 0), tiles_y);
      r4[3] = (int32_t)std::min<int64_t>(std::max<int64_t>((int64_t)std::ceil(my + r), 0), tiles_y);
      for (int32_t ty = r4[2]; ty < r4[3]; ++ty)
        for (int32_t tx = r4[0]; tx < r4[1]; ++tx) ++off[ty * tiles_x + tx + 1];
    }
  });
  for (int64_t t = 0; t < n_tiles; ++t) off[t + 1] += off[t];
  auto ids = torch::empty({off[n_tiles]}, torch::kLong);
  int64_t* out = ids.data_ptr<int64_t>();
  std::vector<int64_t> cursor(off, off + n_tiles);
  for (int64_t i = 0; i < N; ++i) {
    const int32_t* r4 = &rect[4 * i];
    for (int32_t ty = r4[2]; ty < r4[3]; ++ty)
      for (int32_t tx = r4[0]; tx < r4[1]; ++tx) out[cursor[ty * tiles_x + tx]++] = ord[i];
  }
  return {offsets, ids};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("composite_forward", &composite_forward, "tile compositing, forward (CPU)");
  m.def("composite_backward", &composite_backward, "tile compositing, backward (CPU)");
  m.def("tile_lists", &tile_lists, "per-tile Gaussian lists sorted front to back (CPU)");
}
