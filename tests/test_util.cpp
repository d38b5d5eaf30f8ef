// Shared test helpers.
#include "test_util.h"

#include <sys/wait.h>

#include <cstring>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <random>
#include "core/model.h"
#include "kernels/cpu/kernels.h"

namespace llmc::test {

namespace fs = std::filesystem;

std::string fixtures_dir() {
  return (fs::path(LLMC_SOURCE_DIR) / ".." / "shared" / "fixtures").lexically_normal().string();
}

std::string fixture(const std::string& relative) {
  const fs::path p = fs::path(fixtures_dir()) / relative;
  if (fs::exists(p)) return p.string();
  if (std::getenv("CI")) FAIL("fixture missing under CI: " << p.string());
  WARN("skipping: fixture missing: " << p.string());
  return "";
}

std::string smollm2_path() {
  const char* cache = std::getenv("LLMC_CACHE");
  const fs::path dir =
      cache ? fs::path(cache) : fs::path(std::getenv("HOME") ? std::getenv("HOME") : "/root") / ".cache" / "llmc";
  const fs::path p = dir / "SmolLM2-135M-Instruct.gguf";
  if (fs::exists(p)) return p.string();
  if (std::getenv("CI")) FAIL("SmolLM2 missing under CI (scripts/setup fetches it): " << p.string());
  WARN("skipping: SmolLM2 missing (run scripts/setup): " << p.string());
  return "";
}

TempDir::TempDir() {
  std::random_device rd;
  dir_ = fs::temp_directory_path() / ("llmc-test-" + std::to_string(rd()) + std::to_string(rd()));
  fs::create_directories(dir_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

CliResult run_cli(const std::string& args, const std::string& env) {
  const std::string cmd = (env.empty() ? "" : env + " ") + std::string(LLMC_BIN) + " " + args + " 2>&1";
  CliResult r{-1, ""};
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

void require_thread_independent(const Tensor& w, const std::vector<float>& x, const std::vector<int64_t>& tokens) {
  for (int64_t n : tokens) {
    INFO("tokens " << n);
    std::vector<float> y1(static_cast<size_t>(n * w.rows())), y2(y1.size());
    kernels::set_num_threads(1);
    kernels::matmul(w, x.data(), n, y1.data());
    kernels::set_num_threads(2);
    kernels::matmul(w, x.data(), n, y2.data());
    kernels::set_num_threads(0);
    REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
  }
}

void require_same_tensors(const Model& a, const Model& b) {
  REQUIRE(a.tensors().size() == b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const Tensor& x = a.tensors()[i];
    const Tensor& y = b.tensors()[i];
    INFO(x.name);
    REQUIRE(x.name == y.name);
    REQUIRE(x.shape == y.shape);
    const auto vx = x.to_f32(), vy = y.to_f32();
    REQUIRE(std::memcmp(vx.data(), vy.data(), vx.size() * sizeof(float)) == 0);
  }
}

std::vector<unsigned char> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

size_t visited_buffer_bytes(const Encoding& enc) {
  size_t bytes = 0;
  for_each_buffer(enc, [&](const Bytes& b) { bytes += b.size(); });
  return bytes;
}

int64_t anon_huge_kb(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find('-') < line.find(' ')) {
      inside = lo <= at && at < hi;
    } else if (inside && line.rfind("AnonHugePages:", 0) == 0) {
      return std::stoll(line.substr(14));
    }
  }
  return 0;
}

int64_t resident_pages() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident;
}

}  // namespace llmc::test
