// Image IO. See include/ldm/core/image.hpp.
#include "ldm/core/image.hpp"

#include <stb_image.h>
#include <stb_image_write.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>

#include "ldm/core/files.hpp"

#include "ldm/core/atomic_file.hpp"

namespace ldm {
namespace {

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0xffffffffu) {
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return crc;
}

void put_u32be(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(uint8_t(x >> s));
}

// A PNG chunk: length, type, data, CRC over type + data.
std::vector<uint8_t> png_chunk(const char type[4], const std::string& data) {
  std::vector<uint8_t> c;
  put_u32be(c, uint32_t(data.size()));
  c.insert(c.end(), type, type + 4);
  c.insert(c.end(), data.begin(), data.end());
  put_u32be(c, crc32(c.data() + 4, c.size() - 4) ^ 0xffffffffu);
  return c;
}

}  // namespace

Tensor read_image(const std::string& path) {
  check_regular_file(path, "image");  // stb would block on a FIFO
  int w = 0, h = 0, n = 0;
  // The size from the header first: a few bytes of BMP or PNG can declare a huge image (stbi_info
  // gives a top-down BMP's height negative; stbi_load, its absolute value).
  auto check_size = [&path](int64_t iw, int64_t ih) {
    LDM_CHECK(iw <= kMaxImageSide && ih <= kMaxImageSide && iw * ih <= kMaxImagePixels, "image '", path, "' is ", iw,
              "x", ih, ": larger than ldm.cpp reads (at most ", kMaxImageSide, " pixels a side and ",
              kMaxImagePixels >> 20, " Mpixels); scale it down first");
  };
  if (stbi_info(path.c_str(), &w, &h, &n)) check_size(std::abs(int64_t(w)), std::abs(int64_t(h)));
  unsigned char* px = stbi_load(path.c_str(), &w, &h, &n, 3);
  LDM_CHECK(px, "cannot read image '", path, "': ", stbi_failure_reason() ? stbi_failure_reason() : "unknown error",
            " (PNG, JPEG and BMP are supported)");
  std::unique_ptr<unsigned char, void (*)(void*)> pixels(px, stbi_image_free);
  check_size(w, h);
  Tensor t = Tensor::empty({1, 3, h, w});  // [1, 3, H, W] from H x W x 3 bytes
  const int64_t S = int64_t(w) * h;
  float* o = t.data();
  for (int64_t i = 0; i < S; ++i)
    for (int c = 0; c < 3; ++c) o[c * S + i] = float(px[i * 3 + c]) / 255.0f;
  return t;
}

void write_png_rgb8(const std::string& path, const std::vector<uint8_t>& rgb, int width, int height,
                    const std::map<std::string, std::string>& text) {
  LDM_CHECK(rgb.size() == size_t(width) * height * 3, "write_png: ", rgb.size(), " bytes for a ", width, "x", height,
            " RGB image");
  std::vector<uint8_t> png;
  stbi_write_png_to_func(
      [](void* ctx, void* data, int size) {
        auto* out = static_cast<std::vector<uint8_t>*>(ctx);
        out->insert(out->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      },
      &png, width, height, 3, rgb.data(), width * 3);
  LDM_CHECK(png.size() > 33, "write_png: PNG encoding failed for '", path, "'");
  // Insert tEXt chunks right after the IHDR chunk (8-byte signature + 25-byte IHDR).
  std::vector<uint8_t> chunks;
  for (const auto& kv : text) {
    auto c = png_chunk("tEXt", kv.first + std::string(1, '\0') + kv.second);
    chunks.insert(chunks.end(), c.begin(), c.end());
  }
  png.insert(png.begin() + 33, chunks.begin(), chunks.end());
  AtomicFile f(path);  // an existing file survives a failed write
  f.write(png.data(), png.size());
  f.commit();
}

void write_png(const std::string& path, const Tensor& hwc, const std::map<std::string, std::string>& text) {
  LDM_CHECK((hwc.ndim() == 3 || (hwc.ndim() == 4 && hwc.dim(0) == 1)) && hwc.dim(-1) == 3,
            "write_png: expected an [H, W, 3] image, got ", hwc.shape_str());
  const int h = int(hwc.dim(-3)), w = int(hwc.dim(-2));
  std::vector<uint8_t> rgb(size_t(hwc.numel()));
  for (int64_t i = 0; i < hwc.numel(); ++i)
    rgb[size_t(i)] = uint8_t(std::nearbyint(std::clamp(hwc[i], 0.0f, 1.0f) * 255.0f));
  write_png_rgb8(path, rgb, w, h, text);
}

Tensor nchw_to_nhwc(const Tensor& x) {
  const int64_t B = x.dim(0), C = x.dim(1), S = x.dim(2) * x.dim(3);
  Tensor r = Tensor::empty({B, x.dim(2), x.dim(3), C});
  for (int64_t b = 0; b < B; ++b) r.slice0(b, b + 1).matrix(S, C) = x.slice0(b, b + 1).matrix(C, S).transpose();
  return r;
}

Tensor nhwc_to_nchw(const Tensor& x) {
  const int64_t B = x.dim(0), C = x.dim(3), S = x.dim(1) * x.dim(2);
  Tensor r = Tensor::empty({B, C, x.dim(1), x.dim(2)});
  for (int64_t b = 0; b < B; ++b) r.slice0(b, b + 1).matrix(C, S) = x.slice0(b, b + 1).matrix(S, C).transpose();
  return r;
}

std::map<std::string, std::string> read_png_text(const std::string& path) {
  const std::string file = read_file(path, "PNG file", uint64_t(1) << 30);
  const std::vector<uint8_t> b(file.begin(), file.end());
  LDM_CHECK(b.size() >= 8 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0, "'", path, "' is not a PNG file");
  std::map<std::string, std::string> text;
  size_t p = 8;
  while (p + 12 <= b.size()) {
    const uint32_t len = uint32_t(b[p]) << 24 | uint32_t(b[p + 1]) << 16 | uint32_t(b[p + 2]) << 8 | b[p + 3];
    if (p + 12 + len > b.size()) break;
    if (std::memcmp(&b[p + 4], "tEXt", 4) == 0) {
      std::string d(reinterpret_cast<const char*>(&b[p + 8]), len);
      const size_t z = d.find('\0');
      if (z != std::string::npos) text[d.substr(0, z)] = d.substr(z + 1);
    }
    p += 12 + len;
  }
  return text;
}

}  // namespace ldm
