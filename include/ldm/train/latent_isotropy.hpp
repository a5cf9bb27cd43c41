// A VAE regulariser: make the latent pixels' covariance isotropic, so that every latent
// direction carries a like share of the variance.
//
// Why: a VAE trained on reconstruction + KL alone is free to code everything along one
// direction of its C latent channels. Ours did (docs/training.md): on the shapes dataset the
// first VAE put 99% of the latent variance on one axis, coding each colour as one number on a
// line from black to white, so that yellow sat next to white and green next to black. A U-Net
// that diffuses with isotropic noise and a plain MSE then confuses neighbours on that line.
// Nothing in the KL term objects (it prices information, not the way it is laid out), so this
// penalty asks for the layout directly, on the posterior means of a batch:
//
//   z_n [C]   the latent pixels of the batch, n = (b, p) < N = B h w     (mean [B, C, h, w])
//   Cov = (1/N) sum_n (z_n - m_p)(z_n - m_p)^T,  m_p = (1/B) sum_b z_(b,p),   t = tr(Cov) / C
//   S = Cov / t                    (the covariance at unit mean variance: trace C)
//   L = |S - I|_F^2                (0 for isotropic latents; (C-1)^2 + (C-1) for one direction)
//
// Each latent position p is centred on its own mean over the batch, so only what varies from
// picture to picture counts: a fixed spatial pattern (which a convolutional encoder can draw
// from its zero padding, carrying nothing) adds no variance. Hence at least 2 pictures.
//
// Backward: dL/dCov = (2 / t) [(S - I) - (<S - I, S> / C) I]  =: G   (symmetric, [C, C])
//           dL/dz_n = (2 / N) G (z_n - m_p)          (the m_p terms cancel: sum_b (z_(b,p) - m_p) = 0)
// Saves nothing but z. Scale-free: it changes the latents' shape, not their size (the KL term
// and scaling_factor see to that).
#pragma once
#include <Eigen/Dense>

#include "ldm/core/tensor.hpp"

namespace ldm {

namespace detail {

struct Isotropy {
  Eigen::MatrixXd centred;  // z_n - m_p, [C, N], picture after picture
  Eigen::MatrixXd S;        // Cov / t, [C, C]
  double t = 0;             // tr(Cov) / C
};

inline Isotropy isotropy(const Tensor& z) {
  LDM_CHECK(z.ndim() == 4 && z.numel() > 0 && z.dim(0) >= 2,
            "latent_isotropy_loss: expected the latents of at least 2 pictures [B >= 2, C, h, w], got ", z.shape_str());
  const int64_t B = z.dim(0), C = z.dim(1), hw = z.dim(2) * z.dim(3);
  Isotropy r;
  r.centred.resize(C, B * hw);
  Eigen::MatrixXd mean = Eigen::MatrixXd::Zero(C, hw);  // m_p as columns
  for (int64_t b = 0; b < B; ++b) {
    r.centred.middleCols(b * hw, hw) = z.slice0(b, b + 1).matrix(C, hw).cast<double>();
    mean += r.centred.middleCols(b * hw, hw) / double(B);
  }
  for (int64_t b = 0; b < B; ++b) r.centred.middleCols(b * hw, hw) -= mean;
  const Eigen::MatrixXd cov = r.centred * r.centred.transpose() / double(B * hw);
  r.t = cov.trace() / double(C);
  LDM_CHECK(r.t > 0, "latent_isotropy_loss: the latents do not vary from picture to picture (", B,
            " pictures, every latent position the same in all)");
  r.S = cov / r.t;
  return r;
}

}  // namespace detail

// z [B, C, h, w] -> |S - I|_F^2.
inline double latent_isotropy_loss(const Tensor& z) {
  const detail::Isotropy r = detail::isotropy(z);
  return (r.S - Eigen::MatrixXd::Identity(r.S.rows(), r.S.cols())).squaredNorm();
}

// dz [B, C, h, w] of dloss * latent_isotropy_loss(z).
inline Tensor latent_isotropy_loss_backward(const Tensor& z, float dloss = 1.0f) {
  const detail::Isotropy r = detail::isotropy(z);
  const int64_t C = r.S.rows(), N = r.centred.cols(), B = z.dim(0), hw = N / B;
  const Eigen::MatrixXd D = r.S - Eigen::MatrixXd::Identity(C, C);
  const Eigen::MatrixXd G = (2.0 / r.t) * (D - (D.cwiseProduct(r.S).sum() / double(C)) * Eigen::MatrixXd::Identity(C, C));
  const Eigen::MatrixXd dp = (double(dloss) * 2.0 / double(N)) * (G * r.centred);  // [C, N]
  Tensor dz = Tensor::empty(z.shape());
  for (int64_t b = 0; b < B; ++b) dz.slice0(b, b + 1).matrix(C, hw) = dp.middleCols(b * hw, hw).cast<float>();
  return dz;
}

}  // namespace ldm
