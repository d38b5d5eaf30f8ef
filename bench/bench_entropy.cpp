// Benchmark: what each section coder (zstd, Huffman, rANS, auto) saves on real models, and how fast
// the sections decode on one core. Prints Markdown tables (docs/storage.md records the figures).
// Usage: bench_entropy [--reps N] [--dir DIR] [--synthetic MB] [--fast] [MODEL...]   (any format llmc reads)
//   --fast: leave out the zstd-19 row (minutes per 100 MB of sections on one core).
//   --synthetic MB: also decode MB of synthetic sections per coder and layout on one core (4-bit and
//   3-bit Laplace codes, f16 normal weights), the coders' own speed without file overhead.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/llmc.h"
#include "formats/model_io.h"

using namespace llmc;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Coding {
  const char* name;
  std::optional<SectionCoding> coding;
  int zstd_level;
};
const Coding kCodings[] = {
    {"raw", SectionCoding::kNone, 0},           {"zstd-3 (bytes)", std::nullopt, 3},
    {"zstd-19 (bytes)", std::nullopt, 19},      {"zstd-3 (+layouts)", SectionCoding::kZstd, 3},
    {"huffman", SectionCoding::kHuffman, 0},    {"rans", SectionCoding::kRans, 0},
    {"auto (zstd-3)", SectionCoding::kAuto, 3},
};

// Stored bytes of the sections that hold quantization codes (or palette indices) vs the others.
struct Split {
  uint64_t codes_raw = 0, codes_stored = 0, other_raw = 0, other_stored = 0;
};
bool is_code_role(const std::string& role) { return role.find("codes") != std::string::npos || role == "indices"; }
Split split_sections(const LlmcFile& f) {
  std::vector<char> is_code(f.sections.size(), 0);
  for (const auto& t : f.tensor_sections)
    for (const auto& r : t.refs)
      if (is_code_role(r.role)) is_code[r.section] = 1;
  Split s;
  for (size_t i = 0; i < f.sections.size(); ++i) {
    const auto& sec = f.sections[i];
    (is_code[i] ? s.codes_raw : s.other_raw) += sec.raw_size;
    (is_code[i] ? s.codes_stored : s.other_stored) += sec.stored_size;
  }
  return s;
}

// Single-core decode throughput of every coded section of `f`, per coder: MB/s of decoded bytes
// (best of `reps` passes over the file's sections).
std::map<std::string, std::pair<uint64_t, double>> decode_speed(const LlmcFile& f, int reps) {
  std::map<std::string, std::pair<uint64_t, double>> out;  // coder -> (raw bytes, best seconds)
  std::map<std::string, double> best;
  for (int rep = 0; rep < reps; ++rep) {
    std::map<std::string, double> secs;
    std::map<std::string, uint64_t> bytes;
    for (const auto& s : f.sections) {
      if (s.coder == SectionCoder::kNone) continue;
      const double t0 = now();
      auto r = decode_section({f.data + s.offset, static_cast<size_t>(s.stored_size)}, s.coder, s.layout, s.raw_size);
      const double dt = now() - t0;
      if (!r.ok()) {
        std::fprintf(stderr, "decode failed: %s\n", r.error().message.c_str());
        std::exit(1);
      }
      const std::string key = section_coder_name(s.coder);
      secs[key] += dt;
      bytes[key] += s.raw_size;
    }
    for (const auto& [k, v] : secs)
      if (!best.count(k) || v < best[k]) best[k] = v, out[k] = {bytes[k], v};
  }
  return out;
}

std::string pct(double part, double whole) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.1f %%", whole > 0 ? 100.0 * part / whole : 0.0);
  return b;
}

// Rows of `bits`-bit codes of Laplace(spread) weights around the middle code, packed LSB-first.
std::vector<uint8_t> synthetic_codes(size_t rows, size_t cols, int bits, double spread) {
  std::mt19937_64 rng(bits);
  std::exponential_distribution<double> e(1.0 / spread);
  const size_t stride = (cols * bits + 7) / 8;
  std::vector<uint8_t> out(rows * stride, 0);
  const long top = (1L << bits) - 1, mid = 1L << (bits - 1);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      const auto q = static_cast<uint32_t>(std::clamp<long>(mid + std::lround((rng() & 1 ? 1 : -1) * e(rng)), 0, top));
      for (int b = 0; b < bits; ++b)
        if (q >> b & 1) out[r * stride + (c * bits + b) / 8] |= static_cast<uint8_t>(1u << ((c * bits + b) % 8));
    }
  return out;
}

std::vector<uint8_t> synthetic_f16(size_t n) {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<uint8_t> out(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_f16(d(rng));
    out[2 * i] = static_cast<uint8_t>(h);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return out;
}

void synthetic(double mb, int reps) {
  const size_t cols = 4096, bytes = static_cast<size_t>(mb * 1e6);
  struct Input {
    const char* name;
    std::vector<uint8_t> raw;
    SectionHint hint;
  };
  const Input inputs[] = {
      {"4-bit codes, Laplace(1.5)", synthetic_codes(bytes / (cols / 2), cols, 4, 1.5), SectionHint{4, 4096, 0}},
      {"3-bit codes, Laplace(0.8)", synthetic_codes(bytes * 8 / (cols * 3), cols, 3, 0.8), SectionHint{3, 4096, 0}},
      {"f16 N(0, 0.02)", synthetic_f16(bytes / 2), SectionHint{0, 0, 2}},
  };
  std::printf("\n## synthetic sections, one core, best of %d\n\n", reps);
  std::printf("| input | coder | layout | stored / raw | decode MB/s (raw bytes) | Msymbols/s | encode MB/s |\n");
  std::printf("| --- | --- | --- | ---: | ---: | ---: | ---: |\n");
  for (const Input& in : inputs) {
    for (const SectionLayout& layout : candidate_layouts(in.raw, in.hint))
      for (SectionCoder coder : {SectionCoder::kZstd, SectionCoder::kHuffman, SectionCoder::kRans}) {
        double enc = 1e30, dec = 1e30;
        std::vector<uint8_t> stored;
        for (int rep = 0; rep < reps; ++rep) {
          const double t0 = now();
          auto s = encode_section_as(in.raw, coder, layout, 3);
          enc = std::min(enc, now() - t0);
          stored = std::move(s).value();
          const double t1 = now();
          auto d = decode_section(stored, coder, layout, in.raw.size());
          dec = std::min(dec, now() - t1);
          if (!d.ok() || *d != in.raw) {
            std::fprintf(stderr, "round trip failed\n");
            std::exit(1);
          }
        }
        const double symbols = layout.transform == SectionTransform::kUnpack
                                   ? static_cast<double>(in.raw.size()) * 8 / layout.symbol_bits
                                   : static_cast<double>(in.raw.size());
        std::printf("| %s | %s | %s | %s | %.0f | %.0f | %.0f |\n", in.name, section_coder_name(coder),
                    layout.str().c_str(),
                    pct(static_cast<double>(stored.size()), static_cast<double>(in.raw.size())).c_str(),
                    static_cast<double>(in.raw.size()) / dec / 1e6, symbols / dec / 1e6,
                    static_cast<double>(in.raw.size()) / enc / 1e6);
      }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 3;
  std::string dir = "/tmp";
  std::vector<std::string> models;
  double synthetic_mb = 0;
  bool fast = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--synthetic" && i + 1 < argc) {
      synthetic_mb = std::atof(argv[++i]);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--fast") {
      fast = true;
    } else {
      models.push_back(a);
    }
  }
  if (models.empty() && synthetic_mb <= 0) {
    std::fprintf(stderr, "usage: bench_entropy [--reps N] [--dir DIR] [--synthetic MB] [--fast] [MODEL...]\n");
    return 2;
  }
  omp_set_num_threads(1);  // decode figures are per core; writes are single-threaded too
  if (synthetic_mb > 0) synthetic(synthetic_mb, reps);
  for (const std::string& path : models) {
    auto model = load_model(path);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", model.error().message.c_str());
      return 1;
    }
    std::printf("\n## %s\n\n", path.c_str());
    std::printf(
        "| coding | file bytes | codes: stored | codes: vs packed | codes: vs zstd-3 | other sections: stored "
        "| write s | decode MB/s (1 core) |\n");
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    uint64_t zstd_codes = 0;
    for (const Coding& c : kCodings) {
      if (fast && c.zstd_level > 3) continue;
      const std::string out = dir + "/bench_entropy.llmc";
      LlmcWriteOptions o;
      o.coding = c.coding;
      o.zstd_level = c.zstd_level;
      const double t0 = now();
      if (auto w = write_llmc(*model, out, o); !w.ok()) {
        std::fprintf(stderr, "%s\n", w.error().message.c_str());
        return 1;
      }
      const double write_s = now() - t0;
      LlmcReadOptions header_only;
      header_only.load_tensors = false;
      auto f = open_llmc(out, header_only);
      if (!f.ok()) {
        std::fprintf(stderr, "%s\n", f.error().message.c_str());
        return 1;
      }
      const Split s = split_sections(*f);
      if (std::string(c.name) == "zstd-3 (bytes)") zstd_codes = s.codes_stored;
      std::string speed;
      for (const auto& [coder, v] : decode_speed(*f, reps)) {
        char b[96];
        std::snprintf(b, sizeof(b), "%s%s %.0f", speed.empty() ? "" : ", ", coder.c_str(),
                      v.second > 0 ? static_cast<double>(v.first) / v.second / 1e6 : 0.0);
        speed += b;
      }
      const double saved_packed = static_cast<double>(s.codes_raw) - static_cast<double>(s.codes_stored);
      const double saved_zstd = static_cast<double>(zstd_codes) - static_cast<double>(s.codes_stored);
      std::printf("| %s | %llu | %llu | %s | %s | %llu of %llu | %.2f | %s |\n", c.name,
                  static_cast<unsigned long long>(f->size), static_cast<unsigned long long>(s.codes_stored),
                  pct(saved_packed, static_cast<double>(s.codes_raw)).c_str(),
                  zstd_codes ? pct(saved_zstd, static_cast<double>(zstd_codes)).c_str() : "",
                  static_cast<unsigned long long>(s.other_stored), static_cast<unsigned long long>(s.other_raw),
                  write_s, speed.empty() ? "(raw)" : speed.c_str());
      std::filesystem::remove(out);
    }
  }
  return 0;
}
