// Helpers for the GGUF tests: small synthetic models with a vocabulary, and running the Python peer tool.
#pragma once

#include <sys/wait.h>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "core/model.h"
#include "formats/gguf_quants.h"
#include "model/arch.h"

namespace llmc::test {

// A tiny model of `family` with random weights (fixed seed) and a SentencePiece-style vocabulary.
inline Model make_gguf_test_model(ModelFamily family, int64_t hidden_dim, bool tied, uint32_t seed = 7) {
  Model m;
  ModelConfig& c = m.config;
  c.family = family;
  c.dim = 64;
  c.hidden_dim = hidden_dim;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 96;
  c.context_length = 256;
  c.norm_eps = 1e-6f;
  c.rope_theta = 500000.0f;
  c.tied_embeddings = tied;
  c.rope_style = family == ModelFamily::kQwen2 ? RopeStyle::kNeox : RopeStyle::kInterleaved;
  c.attn_qkv_bias = family == ModelFamily::kQwen2;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (const TensorSpec& spec : expected_tensors(c)) {
    std::vector<float> v(static_cast<size_t>(spec.shape.numel()));
    for (float& x : v) x = normal(rng);
    if (spec.role == TensorRole::kNorm)
      for (float& x : v) x = 1.0f + 0.1f * x;
    REQUIRE(m.add(make_dense_f32(spec.name, spec.shape, v)).ok());
  }
  TokenizerData& t = m.tokenizer;
  t.kind = TokenizerKind::kSentencePiece;
  for (int i = 0; i < c.vocab_size; ++i) {
    t.tokens.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "tok" + std::to_string(i));
    t.scores.push_back(-static_cast<float>(i) * 0.25f);
    t.token_types.push_back(i < 3 ? (i == 0 ? 2 : 3) : 1);
  }
  t.pre = "default";
  t.bos_id = 1;
  t.eos_id = 2;
  t.unk_id = 0;
  t.add_bos = true;
  m.metadata["general.name"] = "gguf test model";
  return m;
}

// Byte offsets of the f16 super-scales of each quantized block type (as gguf_peer_tool.py's F16_FIELDS).
inline std::vector<int> ggml_f16_fields(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K: return {0, 2};
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0: return {0};
    case GgmlType::kQ2_K: return {80, 82};
    case GgmlType::kQ3_K: return {108};
    case GgmlType::kQ6_K: return {208};
    default: return {};
  }
}

// n_blocks random blocks of `type`: random bytes, with finite random f16 super-scales (N(0, 1)).
inline std::vector<uint8_t> random_ggml_blocks(const GgmlTypeInfo& info, int64_t n_blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint8_t> raw(static_cast<size_t>(n_blocks * info.type_size));
  for (auto& b : raw) b = static_cast<uint8_t>(rng());
  for (int64_t b = 0; b < n_blocks; ++b)
    for (int off : ggml_f16_fields(info.type)) {
      const uint16_t h = f32_to_f16(normal(rng));
      std::memcpy(raw.data() + b * info.type_size + off, &h, 2);
    }
  return raw;
}

// Runs a shell command, returning its exit status and combined output.
inline std::pair<int, std::string> run_command(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, out};
}

inline std::string peer_tool() { return "python3 " LLMC_SOURCE_DIR "/tests/py/gguf_peer_tool.py"; }

// True when python3 with the gguf and numpy packages is available; otherwise FAIL under CI, else WARN.
inline bool have_python_gguf() {
  const auto [rc, out] = run_command("python3 -c 'import gguf, numpy'");
  if (rc == 0) return true;
  if (std::getenv("CI")) FAIL("python3 with the gguf package is required under CI: " << out);
  WARN("skipping: python3 -c 'import gguf' failed (run scripts/setup): " << out);
  return false;
}

}  // namespace llmc::test
