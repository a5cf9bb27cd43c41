// make_generator: the generator registry (see include/ldm/core/rng.hpp).
#include "ldm/core/rng.hpp"

namespace ldm {

std::vector<std::string> generator_names() { return {"ldm", "torch-cpu", "torch-cuda"}; }

std::unique_ptr<Generator> make_generator(const std::string& name, uint64_t seed) {
  if (name == "ldm") return std::make_unique<LdmGenerator>(seed);
  if (name == "torch-cpu") return std::make_unique<TorchCpuGenerator>(seed);
  if (name == "torch-cuda") return std::make_unique<TorchCudaGenerator>(seed);
  LDM_FAIL("unknown random generator \"", name, "\": use ldm (the default), torch-cpu (torch.Generator(\"cpu\")) ",
           "or torch-cuda (torch.Generator(\"cuda\"))");
}

}  // namespace ldm
