// Choosing a random generator by name (CLI flags, pipeline options).
//   "ldm"        LdmGenerator: the library's default, Philox4x32-10 + Box-Muller (rng_ldm.hpp)
//   "torch-cpu"  TorchCpuGenerator: bit-exact torch.Generator("cpu"), as diffusers users seed (rng_torch_cpu.hpp)
//   "torch-cuda" TorchCudaGenerator: torch.Generator("cuda") to ~1e-6, computed on the CPU (rng_torch_cuda.hpp)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ldm/core/random.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/core/rng_torch_cpu.hpp"
#include "ldm/core/rng_torch_cuda.hpp"

namespace ldm {

std::vector<std::string> generator_names();  // {"ldm", "torch-cpu", "torch-cuda"}

// Throws ldm::Error naming the accepted names when `name` is not one of them.
std::unique_ptr<Generator> make_generator(const std::string& name, uint64_t seed);

}  // namespace ldm
