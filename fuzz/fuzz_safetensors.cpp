// Fuzz target: a safetensors file (header JSON, offsets, dtypes, shapes) read and every tensor
// loaded, viewed and, for integer dtypes, read as int64, as the weight loader and `ldm eval` do.
#include <cmath>

#include "fuzz_input.hpp"
#include "ldm/core/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ldm::fuzz::InputFile file(".safetensors");
  const std::string& path = file.write(data, size);
  try {
    ldm::SafeTensors st(path);
    for (const std::string& name : st.names()) {
      const ldm::TensorInfo& info = st.info(name);
      ldm::Tensor loaded = st.load(name);
      ldm::Tensor viewed = st.view(name);
      if (loaded.numel() != viewed.numel()) __builtin_trap();
      for (int64_t i = 0; i < viewed.numel(); ++i)  // read what the view maps, as a model does
        if (viewed[i] != loaded[i] && !(std::isnan(viewed[i]) && std::isnan(loaded[i]))) __builtin_trap();
      if (info.dtype == ldm::DType::I64 || info.dtype == ldm::DType::I32) st.load_i64(name);
    }
  } catch (const ldm::Error&) {
  }
  return 0;
}
