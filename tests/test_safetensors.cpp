// safetensors reader/writer: round trips in every dtype, and a clear error for each way a
// file can be broken.
#include <catch2/catch.hpp>
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
    CHECK_THROWS_WITH(SafeTensors("/nonexistent/model.safetensors"), Contains("cannot open") && Contains("No such file"));
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
