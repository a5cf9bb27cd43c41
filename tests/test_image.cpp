#include <catch2/catch.hpp>
#include <cstdio>

#include "ldm/core/image.hpp"

using namespace ldm;

TEST_CASE("image: PNG round trip is exact for 8-bit values and keeps text chunks") {
  Tensor img = Tensor::empty({1, 3, 5, 7});
  for (int64_t i = 0; i < img.numel(); ++i) img[i] = float((i * 37) % 256) / 255.0f;
  const std::string path = "/tmp/ldm_test_image.png";
  write_png(path, nchw_to_nhwc(img), {{"parameters", "a red mug\nSteps: 10"}, {"Software", "ldm.cpp"}});
  Tensor back = read_image(path);
  REQUIRE(back.shape() == img.shape());
  for (int64_t i = 0; i < img.numel(); ++i) REQUIRE(back[i] == img[i]);
  auto text = read_png_text(path);
  CHECK(text.at("parameters") == "a red mug\nSteps: 10");
  CHECK(text.at("Software") == "ldm.cpp");
  std::remove(path.c_str());
}

TEST_CASE("image: unreadable files get a clear error") {
  CHECK_THROWS_WITH(read_image("/nonexistent.png"), Catch::Contains("cannot read image '/nonexistent.png'"));
  CHECK_THROWS_WITH(write_png("/tmp/x.png", Tensor({4, 4})), Catch::Contains("expected an [H, W, 3] image"));
}
