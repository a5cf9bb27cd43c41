#include <catch2/catch.hpp>

#include "ldm/core/tensor.hpp"

using namespace ldm;

TEST_CASE("tensor: shape, zero fill, reshape shares storage, clone copies") {
  Tensor t({2, 3, 4});
  CHECK(t.numel() == 24);
  CHECK(t.dim(-1) == 4);
  CHECK(t[23] == 0.0f);
  Tensor r = t.reshape({6, -1});
  CHECK(r.shape() == Shape{6, 4});
  r[5] = 7.0f;
  CHECK(t[5] == 7.0f);
  Tensor c = t.clone();
  c[5] = 1.0f;
  CHECK(t[5] == 7.0f);
  CHECK_THROWS_WITH(t.reshape({5, 5}), Catch::Contains("cannot view [2, 3, 4] as [5, 5]"));
  CHECK_THROWS_WITH(t.dim(3), Catch::Contains("out of range"));
}

TEST_CASE("tensor: slice0 views one item of a batch; matrix maps rows x cols") {
  Tensor t = Tensor::from({2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  Tensor b1 = t.slice0(1, 2);
  CHECK(b1.shape() == Shape{1, 2, 2});
  CHECK(b1[0] == 4.0f);
  auto m = t.matrix();
  CHECK(m.rows() == 4);
  CHECK(m(3, 1) == 7.0f);
  CHECK_THROWS(t.slice0(1, 3));
}

TEST_CASE("tensor: element counts are multiplied with overflow checks; absurd shapes are refused") {
  using Catch::Contains;
  const int64_t big = int64_t(1) << 54;  // [2^54, 4, 8, 8] floats: 2^66 bytes, 0 after wrapping
  CHECK_THROWS_WITH(numel_of({big, 4, 8, 8}), Contains("[18014398509481984, 4, 8, 8]") && Contains("more than 2^40"));
  CHECK_THROWS_WITH(Tensor::empty({big, 4, 8, 8}), Contains("more than 2^40 elements"));
  CHECK_THROWS_WITH(Tensor({int64_t(1) << 32, int64_t(1) << 32}), Contains("more than 2^40 elements"));
  CHECK_THROWS_WITH(Tensor({2, -3}), Contains("negative dimension in shape [2, -3]"));
  CHECK_THROWS_WITH(checked_numel({-1, -1}, "tensor 'x' in 'f'"), Contains("tensor 'x' in 'f' has a negative dimension"));
  CHECK_THROWS_WITH(checked_bytes({kMaxNumel, 2}, 4, "tensor 'x'"), Contains("tensor 'x' has shape"));
  CHECK(checked_bytes({kMaxNumel}, 8, "tensor 'x'") == uint64_t(1) << 43);
  CHECK(numel_of({0, kMaxNumel}) == 0);
  CHECK_THROWS_WITH(Tensor({4}).reshape({big, big, -1}), Contains("cannot view [4]"));
}
