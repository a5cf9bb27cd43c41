// safetensors reader/writer: round trips in every dtype, and a clear error for each way a
// file can be broken.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include <unistd.h>

#include "ldm/core/safetensors.hpp"
#include "ldm/core/weights.hpp"

using namespace ldm;
using Catch::Contains;

namespace {

// Temporary files, removed when the test program ends.
struct TmpFiles {
  std::vector<std::string> paths;
  ~TmpFiles() {
    for (const auto& p : paths) std::remove(p.c_str());
  }
};
TmpFiles tmp_files;

std::string tmp_path(const std::string& name) {
  tmp_files.paths.push_back("/tmp/ldm_test_" + std::to_string(::getpid()) + "_" + name);
  return tmp_files.paths.back();
}

// A file from a raw header string and a data section of `data_bytes` zero bytes.
std::string write_raw(const std::string& name, const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  std::string p = tmp_path(name);
  std::ofstream f(p, std::ios::binary);
  uint64_t n = claimed_len < 0 ? header.size() : uint64_t(claimed_len);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header;
  f << std::string(data_bytes, '\0');
  return p;
}

}  // namespace

TEST_CASE("safetensors: round trip F32, F16, BF16, I64 with metadata") {
  Tensor a = Tensor::from({2, 3}, {0.5f, -1.0f, 3.25f, 1e-3f, 65504.0f, -2.0f});
  SafeTensorsWriter w;
  w.add("a32", a);
  w.add("a16", a, DType::F16);
  w.add("ab16", a, DType::BF16);
  w.add_i64("ids", {1, 3}, {49406, 320, 49407});
  w.set_metadata("format", "pt");
  const std::string p = tmp_path("roundtrip.safetensors");
  w.save(p);

  SafeTensors f(p);
  CHECK(f.names() == std::vector<std::string>{"a16", "a32", "ab16", "ids"});
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.info("a16").dtype == DType::F16);
  Tensor r32 = f.load("a32"), r16 = f.load("a16"), rb16 = f.load("ab16");
  for (int i = 0; i < 6; ++i) {
    CHECK(r32[i] == a[i]);
    CHECK(r16[i] == Approx(a[i]).epsilon(1e-3));
    CHECK(rb16[i] == Approx(a[i]).epsilon(8e-3));
  }
  CHECK(r16[0] == 0.5f);  // exactly representable values survive exactly
  CHECK(r16[4] == 65504.0f);
  CHECK(f.load_i64("ids") == std::vector<int64_t>{49406, 320, 49407});
  CHECK_THROWS_WITH(f.load_i64("a32"), Contains("expected an integer tensor"));
  CHECK_THROWS_WITH(f.load("nope"), Contains("tensor 'nope' not found"));
  std::remove(p.c_str());
}

TEST_CASE("safetensors: every kind of bad input gets a clear error") {
  SECTION("missing file") {
    CHECK_THROWS_WITH(SafeTensors("/nonexistent/model.safetensors"), Contains("cannot read safetensors file") && Contains("No such file"));
  }
  SECTION("a directory") { CHECK_THROWS_WITH(SafeTensors("/tmp"), Contains("not a regular file")); }
  SECTION("shorter than the 8-byte header length") {
    std::string p = tmp_path("short.safetensors");
    std::ofstream(p) << "abc";
    CHECK_THROWS_WITH(SafeTensors(p), Contains("truncated") && Contains("3 bytes"));
  }
  SECTION("header longer than the file (truncated or another format)") {
    std::string p = write_raw("longheader.safetensors", "{}", 0, 1000);
    CHECK_THROWS_WITH(SafeTensors(p), Contains("header length 1000 exceeds"));
  }
  SECTION("header not JSON (e.g. a pickle .ckpt renamed)") {
    std::string p = write_raw("notjson.safetensors", "PK\x03\x04 not json", 0);
    CHECK_THROWS_WITH(SafeTensors(p), Contains("corrupt header"));
  }
  SECTION("offsets out of range") {
    std::string p = write_raw("offsets.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
    CHECK_THROWS_WITH(SafeTensors(p), Contains("tensor 'w'") && Contains("outside the 8-byte data section"));
  }
  SECTION("unknown dtype") {
    std::string p = write_raw("dtype.safetensors", R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4);
    CHECK_THROWS_WITH(SafeTensors(p), Contains("unknown safetensors dtype \"F8_E4M3\""));
  }
  SECTION("duplicate names") {
    std::string p = write_raw("dup.safetensors",
                              R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
    CHECK_THROWS_WITH(SafeTensors(p), Contains("names tensor 'w' twice"));
  }
  SECTION("shape does not match the byte size") {
    std::string p = write_raw("size.safetensors", R"({"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,8]}})", 8);
    CHECK_THROWS_WITH(SafeTensors(p), Contains("needs 12 bytes but its offsets span 8"));
  }
  SECTION("entry without data_offsets") {
    std::string p = write_raw("entry.safetensors", R"({"w":{"dtype":"F32","shape":[2]}})", 8);
    CHECK_THROWS_WITH(SafeTensors(p), Contains("needs dtype, shape and data_offsets"));
  }
}

TEST_CASE("safetensors: a shape whose byte size overflows is refused, naming the file and the tensor") {
  // [2^54, 4, 8, 8] F32 is 2^66 bytes: wrapped to 0, it matched data_offsets [0, 0] and the
  // 64-byte tensor allocated for it was written far past its end.
  std::string p = write_raw("overflow.safetensors",
                            R"({"latent":{"dtype":"F32","shape":[18014398509481984,4,8,8],"data_offsets":[0,0]}})", 0);
  CHECK_THROWS_WITH(SafeTensors(p), Contains("tensor 'latent' in safetensors file '" + p + "'") &&
                                        Contains("[18014398509481984, 4, 8, 8]") && Contains("more than 2^40 elements"));
  p = write_raw("huge_dim.safetensors", R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})", 0);
  CHECK_THROWS_WITH(SafeTensors(p), Contains("tensor 'w'") && Contains("a shape is a list of non-negative integers"));
}

TEST_CASE("safetensors: the format's rules, as the reference implementation checks them") {
  auto refused = [](const std::string& name, const std::string& header, size_t data_bytes) {
    const std::string p = write_raw(name, header, data_bytes);
    try {
      SafeTensors f(p);
    } catch (const Error& e) {
      const std::string msg = e.what();
      CHECK_THAT(msg, Contains("safetensors file '" + p + "'") && !Contains("json.exception"));
      return msg;
    }
    FAIL("'" << header << "' was accepted");
    return std::string();
  };
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":)";
  SECTION("data_offsets: two non-negative integers") {
    for (const char* offsets : {"[0.0,8.0]", "[-8,0]", "[\"0\",\"8\"]", "[0]", "[0,8,8]", "null", "8"})
      CHECK_THAT(refused("offsets.safetensors", "{" + a + offsets + "}}", 8),
                 Contains("tensor 'a' has \"data_offsets\": ") && Contains("expected two non-negative integers"));
  }
  SECTION("tensors tile the data section: no overlap, no hole, nothing after the last") {
    CHECK_THAT(refused("overlap.safetensors", "{" + a + "[0,8]}," + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8),
               Contains("tensor 'b' at bytes [0, 8) overlaps tensor 'a' at [0, 8)"));
    CHECK_THAT(refused("overlap2.safetensors", "{" + a + "[0,8]}," + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
               Contains("tensor 'b' at bytes [4, 12) overlaps tensor 'a'"));
    CHECK_THAT(refused("hole.safetensors", "{" + a + "[8,16]}}", 16),
               Contains("bytes [0, 8) of the data section belong to no tensor (before tensor 'a')"));
    CHECK_THAT(refused("trailing.safetensors", "{" + a + "[0,8]}}", 12),
               Contains("bytes [8, 12) at the end of the data section belong to no tensor"));
  }
  SECTION("shape: a list of non-negative integers") {
    for (const char* shape : {"1", "null", "[2.0]", "[-1]", "[\"2\"]", "{}"})
      CHECK_THAT(refused("shape.safetensors", std::string(R"({"a":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,8]}})", 8),
                 Contains("tensor 'a' has \"shape\": ") && Contains("a shape is a list of non-negative integers"));
  }
  SECTION("dtype: a known name") {
    CHECK_THAT(refused("dtype.safetensors", R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
               Contains("tensor 'a' has \"dtype\": 4; expected a name such as \"F32\""));
  }
  SECTION("__metadata__: strings to strings") {
    CHECK_THAT(refused("meta.safetensors", R"({"__metadata__":{"format":"pt","n":5},)" + a + "[0,8]}}", 8),
               Contains("__metadata__ maps strings to strings, but \"n\" is 5"));
    CHECK_THAT(refused("meta2.safetensors", R"({"__metadata__":["pt"],)" + a + "[0,8]}}", 8),
               Contains("__metadata__ must be an object of strings"));
  }
  SECTION("a header of more than 100 MB") {
    // A sparse file: 101 MB long, nothing written.
    const std::string p = write_raw("bigheader.safetensors", "", 0, 101'000'000);
    REQUIRE(::truncate(p.c_str(), 101'000'008) == 0);
    CHECK_THROWS_WITH(SafeTensors(p), Contains("96 MiB header, more than the 100 MB a safetensors header may have"));
  }
  SECTION("zero-size tensors and empty files are fine") {
    const std::string p = write_raw("empty.safetensors", R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)" + a + "[0,8]}}", 8);
    SafeTensors f(p);
    CHECK(f.load("e").shape() == Shape{0, 3});
    CHECK(SafeTensors(write_raw("nothing.safetensors", "{}", 0)).names().empty());
  }
}

TEST_CASE("safetensors: float data at an address a float* must not take is copied, not viewed") {
  // The header is 1 byte short of a multiple of 4 (no padding), so the data section is misaligned.
  std::string header = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  header.append((4 - (8 + header.size()) % 4) % 4 + 1, ' ');
  const std::string p = tmp_path("misaligned.safetensors");
  {
    std::ofstream f(p, std::ios::binary);
    const uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << header;
    const float v[3] = {1.5f, -2.0f, 3.25f};
    f.write(reinterpret_cast<const char*>(v), sizeof(v));
  }
  SafeTensors f(p);
  REQUIRE(reinterpret_cast<uintptr_t>(f.raw("w")) % alignof(float) != 0);
  const Tensor t = f.view("w");
  CHECK(reinterpret_cast<uintptr_t>(t.data()) % alignof(float) == 0);
  CHECK((t[0] == 1.5f && t[1] == -2.0f && t[2] == 3.25f));
}

TEST_CASE("safetensors: the writer aligns every tensor for its dtype, so float32 loads without a copy") {
  SafeTensorsWriter w;
  w.add("h", Tensor::full({3}, 1.0f), DType::F16);  // 6 bytes: a tensor after it would be misaligned
  w.add("f", Tensor::full({5}, 2.0f));
  w.add_i64("i", {1}, {7});
  w.add("b", Tensor::full({1}, 3.0f), DType::BF16);
  const std::string p = tmp_path("aligned.safetensors");
  w.save(p);
  SafeTensors f(p);
  for (const auto& name : f.names()) {
    const TensorInfo& ti = f.info(name);
    CHECK(reinterpret_cast<uintptr_t>(f.raw(name)) % dtype_size(ti.dtype) == 0);
  }
  CHECK(f.view("f").data() == reinterpret_cast<const float*>(f.raw("f")));  // a view of the mapping
  CHECK((f.load("h")[2] == 1.0f && f.load("f")[4] == 2.0f && f.load_i64("i")[0] == 7 && f.load("b")[0] == 3.0f));
}

TEST_CASE("weight store: reports missing, mis-shaped and unexpected tensors by name") {
  std::map<std::string, Tensor> m{{"block.conv1.weight", Tensor({8, 4, 3, 3})},
                                  {"block.conv1.bias", Tensor({4})},
                                  {"block.extra", Tensor({1})}};
  WeightStore w(std::make_shared<MapSource>(m));
  CHECK(w.get("block.conv1.weight", {8, 4, 3, 3}).numel() == 288);
  w.get("block.conv1.bias", {8});
  w.get("block.norm1.weight", {4});
  try {
    w.finish(/*check_unexpected=*/true);
    FAIL("finish() should throw");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK_THAT(msg, Contains("1 missing") && Contains("block.norm1.weight [4]"));
    CHECK_THAT(msg, Contains("block.conv1.bias: file has [4], model expects [8]"));
    CHECK_THAT(msg, Contains("1 unexpected") && Contains("block.extra"));
  }
}

TEST_CASE("weight store: synthetic source gives synth.param values") {
  WeightStore w(std::make_shared<SyntheticSource>(), "unet");
  Tensor t = w.get("conv_in.weight", {320, 4, 3, 3});
  CHECK(t[0] == synth::param("unet.conv_in.weight", {320, 4, 3, 3})[0]);
  w.finish();
}

TEST_CASE("weight store: problems cost no memory, and a check-only store reads nothing") {
  // Counts the tensors read from it.
  struct CountingSource : MapSource {
    using MapSource::MapSource;
    mutable int loads = 0;
    Tensor load(const std::string& name, const Shape& s) const override {
      ++loads;
      return MapSource::load(name, s);
    }
  };
  auto src = std::make_shared<CountingSource>(std::map<std::string, Tensor>{{"w", Tensor::full({4}, 1.0f)}});
  WeightStore check(src);
  check.set_check_only(true);
  CHECK(check.get("w", {4}).shape() == Shape{4});
  CHECK(!check.get_half("w", {4}).defined());
  // A missing tensor of 16 GB: a stand-in of zeros that no memory backs.
  const Tensor big = check.get("absent", {1 << 16, 1 << 16});
  CHECK((big.shape() == Shape{1 << 16, 1 << 16} && big[0] == 0.0f && big[int64_t(1) << 31] == 0.0f));
  CHECK(src->loads == 0);
  CHECK_THROWS_WITH(check.finish(), Contains("1 missing") && Contains("absent [65536, 65536]"));

  WeightStore w(src);
  CHECK(w.get("w", {4})[3] == 1.0f);
  CHECK(src->loads == 1);
  CHECK_NOTHROW(w.finish());
}
