// VAE tiling, as diffusers' AutoencoderKL does it after enable_tiling() (tiled_decode,
// _tiled_encode): a picture too large to decode (or encode) in one piece is done in tiles of the
// size the VAE was trained at, which overlap by a quarter and are blended across the overlap, so
// memory stays that of one tile whatever the picture's size.
//
//   decode, z [B, C, h, w] (already / scaling_factor) -> image [B, 3, 8h, 8w]:
//     tiles of T = sample_size / 8 latents (64 for SD1.5) start every 3T/4 (48), each decoded
//     on its own to 8T pixels (512); each tile, in row order, is blended into its upper then its
//     left neighbour over E = sample_size / 4 pixels (128):
//         b[y] = a[-E + y] * (1 - y/E) + b[y] * (y/E)          y < E, rows (then columns)
//     and its top-left (8T - E) x (8T - E) pixels (384) go to the picture.
//   encode, x [B, 3, H, W] -> q(z|x): the same with the roles swapped (tiles of sample_size
//     pixels every 3/4 of it, blended over T/4 latents, T - T/4 kept), on the mean and the
//     log-variance; a log-variance beyond the clamp [-30, 20] in an overlap is blended clamped
//     here and raw in diffusers (the one place they can differ).
//
// The blends are diffusers' own, in place: a tile is blended into neighbours that were themselves
// blended already. Only the previous row of tiles is kept, not all of them. The networks come
// in as callables, so the same code tiles the CPU and the GPU VAE.
#pragma once
#include <algorithm>
#include <limits>
#include <vector>

#include "ldm/core/tensor.hpp"
#include "ldm/models/vae.hpp"

namespace ldm {

struct VaeTiling {
  int64_t sample_tile = 512;  // pixels: the VAE's sample_size
  int64_t latent_tile = 64;   // latents: sample_size / the VAE's factor
  int64_t factor = 8;         // pixels per latent
  double overlap = 0.25;      // diffusers' tile_overlap_factor

  // No tiling: one tile larger than any picture.
  static VaeTiling whole() {
    VaeTiling t;
    t.sample_tile = t.latent_tile = std::numeric_limits<int64_t>::max() / 16;
    return t;
  }

  static VaeTiling of(const VAEConfig& c) {
    VaeTiling t;
    t.sample_tile = c.sample_size;
    t.factor = c.downscale_factor();
    t.latent_tile = c.sample_size / t.factor;
    LDM_CHECK(t.latent_tile >= 2, "VAE tiling: sample_size ", c.sample_size, " gives tiles of ", t.latent_tile,
              " latents; tiling needs at least 2");
    return t;
  }
};

namespace detail {

// x[:, :, top : top + h, left : left + w], clipped to x's size, as a new tensor.
inline Tensor crop_hw(const Tensor& x, int64_t top, int64_t left, int64_t h, int64_t w) {
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  h = std::min(h, H - top);
  w = std::min(w, W - left);
  Tensor r = Tensor::empty({B, C, h, w});
  for (int64_t p = 0; p < B * C; ++p)
    for (int64_t y = 0; y < h; ++y) {
      const float* src = x.data() + (p * H + top + y) * W + left;
      std::copy(src, src + w, r.data() + (p * h + y) * w);
    }
  return r;
}

// dst[:, :, top : top + h, left : left + w] = src[:, :, :h, :w].
inline void paste_hw(Tensor& dst, const Tensor& src, int64_t top, int64_t left, int64_t h, int64_t w) {
  const int64_t BC = dst.dim(0) * dst.dim(1), H = dst.dim(2), W = dst.dim(3), sh = src.dim(2), sw = src.dim(3);
  for (int64_t p = 0; p < BC; ++p)
    for (int64_t y = 0; y < h; ++y) {
      const float* s = src.data() + (p * sh + y) * sw;
      std::copy(s, s + w, dst.data() + (p * H + top + y) * W + left);
    }
}

// b's first `extent` rows (vertical) or columns fade in from a's last ones, in place.
inline void blend(const Tensor& a, Tensor& b, int64_t extent, bool vertical) {
  const int axis = vertical ? 2 : 3;
  extent = std::min({a.dim(axis), b.dim(axis), extent});
  const int64_t BC = b.dim(0) * b.dim(1), ah = a.dim(2), aw = a.dim(3), bh = b.dim(2), bw = b.dim(3);
  for (int64_t k = 0; k < extent; ++k) {
    const float wb = float(double(k) / double(extent)), wa = float(1.0 - double(k) / double(extent));
    for (int64_t p = 0; p < BC; ++p) {
      if (vertical) {
        const float* ar = a.data() + (p * ah + ah - extent + k) * aw;
        float* br = b.data() + (p * bh + k) * bw;
        for (int64_t x = 0; x < bw; ++x) br[x] = ar[x] * wa + br[x] * wb;
      } else {
        for (int64_t y = 0; y < bh; ++y) {
          float& v = b.data()[(p * bh + y) * bw + k];
          v = a.data()[(p * ah + y) * aw + aw - extent + k] * wa + v * wb;
        }
      }
    }
  }
}

// The tiling loop shared by decode and encode: tiles of `in_tile` every `stride` over x's
// H x W; each through `run` (its outputs, e.g. mean and log-variance, at `out_of(n)` for n of
// x's pixels), blended with its upper and left neighbour over `extent`, its top-left `keep` x
// `keep` pasted into the outputs [B, C_k, out_of(H), out_of(W)].
template <typename OutOf, typename Run>
std::vector<Tensor> tiled(const Tensor& x, int64_t in_tile, int64_t stride, int64_t extent, int64_t keep, OutOf out_of,
                          Run run) {
  LDM_CHECK(x.ndim() == 4, "VAE tiling: expected [B, C, H, W], got ", x.shape_str());
  LDM_CHECK(stride >= 1 && keep >= 1, "VAE tiling: tiles of ", in_tile, " are too small to overlap");
  const int64_t H = x.dim(2), W = x.dim(3);
  std::vector<Tensor> out;
  std::vector<std::vector<Tensor>> above, row;  // [tile j][output k], blended already
  for (int64_t i = 0; i < H; i += stride) {
    row.clear();
    for (int64_t j = 0; j < W; j += stride) {
      std::vector<Tensor> t = run(crop_hw(x, i, j, in_tile, in_tile));
      if (out.empty())
        for (const Tensor& o : t) out.push_back(Tensor::full({o.dim(0), o.dim(1), out_of(H), out_of(W)}, 0.0f));
      const size_t jt = row.size();
      for (size_t k = 0; k < t.size(); ++k) {
        if (i > 0) blend(above[jt][k], t[k], extent, /*vertical=*/true);
        if (j > 0) blend(row[jt - 1][k], t[k], extent, /*vertical=*/false);
        paste_hw(out[k], t[k], out_of(i), out_of(j), std::min(keep, t[k].dim(2)), std::min(keep, t[k].dim(3)));
      }
      row.push_back(std::move(t));
    }
    std::swap(above, row);
  }
  return out;
}

}  // namespace detail

// Whether diffusers would tile: a side larger than one tile.
inline bool vae_decode_tiles(const VaeTiling& t, const Tensor& z) { return z.dim(2) > t.latent_tile || z.dim(3) > t.latent_tile; }
inline bool vae_encode_tiles(const VaeTiling& t, const Tensor& x) { return x.dim(2) > t.sample_tile || x.dim(3) > t.sample_tile; }

// z [B, C, h, w] -> image [B, 3, f h, f w], as diffusers' decode after enable_tiling(): in tiles
// when a side is larger than one, else whole. decode_tile: latents -> image (f = 8 for SD).
template <typename DecodeTile>
Tensor tiled_decode(const Tensor& z, const VaeTiling& t, DecodeTile&& decode_tile) {
  if (!vae_decode_tiles(t, z)) return decode_tile(z);
  const int64_t stride = int64_t(double(t.latent_tile) * (1.0 - t.overlap));
  const int64_t extent = int64_t(double(t.sample_tile) * t.overlap);
  return detail::tiled(
      z, t.latent_tile, stride, extent, t.sample_tile - extent, [&t](int64_t n) { return n * t.factor; },
      [&](const Tensor& tile) { return std::vector<Tensor>{decode_tile(tile)}; })[0];
}

// x [B, 3, H, W] -> q(z|x) over [B, C, H/f, W/f], as diffusers' encode after enable_tiling(): in
// tiles when a side is larger than one, else whole. encode_tile: image -> its posterior.
template <typename EncodeTile>
DiagonalGaussian tiled_encode(const Tensor& x, const VaeTiling& t, EncodeTile&& encode_tile) {
  const int64_t factor = t.factor;
  if (!vae_encode_tiles(t, x)) return encode_tile(x);
  LDM_CHECK(x.ndim() == 4 && x.dim(2) % factor == 0 && x.dim(3) % factor == 0, "VAE tiling: the image ",
            x.shape_str(), " must be [B, 3, H, W] with H and W multiples of ", factor);
  const int64_t stride = int64_t(double(t.sample_tile) * (1.0 - t.overlap));
  const int64_t extent = int64_t(double(t.latent_tile) * t.overlap);
  LDM_CHECK(stride % factor == 0, "VAE tiling: tiles of ", t.sample_tile, " pixels start every ", stride,
            ", not a multiple of ", factor);
  std::vector<Tensor> r = detail::tiled(
      x, t.sample_tile, stride, extent, t.latent_tile - extent, [factor](int64_t n) { return n / factor; },
      [&](const Tensor& tile) {
        DiagonalGaussian q = encode_tile(tile);
        return std::vector<Tensor>{q.mean, q.logvar};
      });
  DiagonalGaussian q;
  q.mean = r[0];
  q.logvar = r[1];
  return q;
}

}  // namespace ldm
