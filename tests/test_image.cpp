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

TEST_CASE("image: a small file declaring a huge image is refused before decoding (found by fuzz_image)") {
  // The fuzzer's 52-byte BMP: 3 x 14,893,058 pixels; decoding it took 39 s under the sanitizers.
  const unsigned char bmp[] = {0x42, 0x4d, 0x4e, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0, 0x28, 0, 0, 0, 0x03, 0, 0, 0,
                               0x02, 0x40, 0xe3, 0, 0x01, 0, 0x18, 0, 0, 0, 0, 0, 0, 0x2b, 0, 0, 0x58, 0x11, 0xec,
                               0xff, 0xff, 0xff, 0x55, 0x30, 0x0b, 0xc4, 0x0e, 0xe9, 0, 0, 0};
  const std::string path = "/tmp/ldm_test_huge.bmp";
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    std::fwrite(bmp, 1, sizeof(bmp), f);
    std::fclose(f);
  }
  CHECK_THROWS_WITH(read_image(path), Catch::Contains("is 3x14893058: larger than ldm.cpp reads"));
  std::remove(path.c_str());
}

TEST_CASE("image: a top-down BMP declaring a huge image is refused too (found by fuzz_image)") {
  // stbi_info gives a top-down BMP's height negative (here 770 x -327680): the size check takes
  // its absolute value, as stbi_load does.
  const unsigned char bmp[] = {0x42, 0x4d, 0x4e, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0x36, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0xfb, 0xff, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x55, 0x30, 0x0b, 0xc4, 0x01, 0x00, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x70, 0x61, 0x65, 0xd5, 0x17};
  const std::string path = "/tmp/ldm_test_huge_top_down.bmp";
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    std::fwrite(bmp, 1, sizeof(bmp), f);
    std::fclose(f);
  }
  CHECK_THROWS_WITH(read_image(path), Catch::Contains("is 770x327680: larger than ldm.cpp reads"));
  std::remove(path.c_str());
}
