// Shared test helpers: fixture paths (fail loudly in CI when missing), temp dirs, running the CLI.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace llmc {
class Model;
struct Tensor;
struct Encoding;
}  // namespace llmc

namespace llmc::test {

// ../shared/fixtures relative to the source tree.
std::string fixtures_dir();
// Path of a fixture file; when it is missing: FAIL under CI=..., otherwise returns "" after a WARN
// so the caller can `if (path.empty()) return;`.
std::string fixture(const std::string& relative);
// SmolLM2-135M-Instruct Q4_1 GGUF from the setup script's cache ($LLMC_CACHE or ~/.cache/llmc).
std::string smollm2_path();

// A fresh empty directory under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

struct CliResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};
// Runs the llmc binary with the given shell-quoted argument string; env: "NAME=value ..." for it.
CliResult run_cli(const std::string& args, const std::string& env = "");

// REQUIREs the same tensor names in the same order, the same shapes and bit-identical decoded values.
void require_same_tensors(const Model& a, const Model& b);

// REQUIREs that matmul of w with each token count n (x holds at least n · cols floats) gives the same bits
// on 1 and 2 threads.
void require_thread_independent(const Tensor& w, const std::vector<float>& x, const std::vector<int64_t>& tokens);

// Sum of the sizes of the buffers for_each_buffer visits (equals encoded_bytes when it visits all).
size_t visited_buffer_bytes(const Encoding& enc);

// kB of transparent huge pages in the mapping of this process that holds `p` (/proc/self/smaps).
int64_t anon_huge_kb(const void* p);

// Resident pages of this process (/proc/self/statm): mapped file pages count while mapped in.
int64_t resident_pages();

std::vector<unsigned char> read_file_bytes(const std::string& path);
void write_file_bytes(const std::string& path, const std::vector<unsigned char>& bytes);

}  // namespace llmc::test
