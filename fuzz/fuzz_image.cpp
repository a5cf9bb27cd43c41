// Fuzz target: an image file as `--init-image` reads it (PNG, JPEG, BMP through stb_image) and
// the PNG text chunks as read_png_text parses them (our own chunk walker).
#include "fuzz_input.hpp"
#include "ldm/core/image.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ldm::fuzz::InputFile file(".img");
  const std::string& path = file.write(data, size);
  try {
    ldm::Tensor image = ldm::read_image(path);  // [1, 3, H, W] in [0, 1]
    if (image.ndim() != 4 || image.dim(0) != 1 || image.dim(1) != 3) __builtin_trap();
    for (float v : image)
      if (!(v >= 0.0f && v <= 1.0f)) __builtin_trap();
  } catch (const ldm::Error&) {
  }
  try {
    ldm::read_png_text(path);
  } catch (const ldm::Error&) {
  }
  return 0;
}
