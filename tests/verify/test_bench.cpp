// Bench loop structure (prefill then greedy decode positions), spreads, bandwidth probe and machine info.
#include <catch2/catch.hpp>

#include "verify/bench.h"
#include "verify/fake_runtime.h"
#include "verify/report.h"

using namespace llmc;

TEST_CASE("spread: median, min, max", "[verify]") {
  const Spread s = spread_of({3, 1, 2, 10});
  CHECK(s.median == Approx(2.5));
  CHECK(s.min == 1);
  CHECK(s.max == 10);
  CHECK(s.samples.size() == 4);
  CHECK(spread_of({}).median == 0);
}

TEST_CASE("bench prefills once and decodes greedily one token at a time", "[verify]") {
  // Row t peaks at (t + 1) % 3, so greedy decoding from token t yields t+1, t+2, ...
  const std::vector<std::vector<double>> table = {{0.1, 0.8, 0.1}, {0.1, 0.1, 0.8}, {0.8, 0.1, 0.1}};
  llmc::test::BigramRuntime rt(table, 32);
  BenchOptions opt;
  opt.prompt_tokens = 5;
  opt.gen_tokens = 4;
  opt.repeat = 2;
  opt.membw_bytes = 0;
  auto r = run_bench(rt, opt);
  REQUIRE(r.ok());
  // warm-up (1 call) + 2 * (prefill + 4 decodes)
  REQUIRE(rt.calls.size() == 1 + 2 * 5);
  for (int rep = 0; rep < 2; ++rep) {
    const auto& prefill = rt.calls[1 + rep * 5];
    CHECK(prefill.pos == 0);
    CHECK(prefill.tokens.size() == 5);
    int32_t expect = (prefill.tokens.back() + 1) % 3;
    for (int i = 0; i < 4; ++i) {
      const auto& d = rt.calls[2 + rep * 5 + i];
      CHECK(d.pos == 5 + i);
      REQUIRE(d.tokens.size() == 1);
      CHECK(d.tokens[0] == expect);
      expect = (expect + 1) % 3;
    }
  }
  CHECK(r->prefill_tps.samples.size() == 2);
  CHECK(r->decode_tps.min <= r->decode_tps.median);
  CHECK(r->decode_tps.median <= r->decode_tps.max);
  CHECK(r->weight_bytes_per_token == 1000);
  CHECK(r->peak_rss_bytes > 0);
  CHECK(r->membw.gb_per_s == 0);
  CHECK(r->decode_bandwidth_fraction == 0);

  opt.prompt_tokens = 30;  // 30 + 4 > 32
  CHECK(run_bench(rt, opt).error().code == ErrorCode::kInvalidArgument);
  opt.prompt_tokens = 0;
  CHECK(!run_bench(rt, opt).ok());
}

TEST_CASE("memory bandwidth probe and machine description", "[verify]") {
  const MemBandwidth bw = measure_memory_bandwidth(uint64_t(32) << 20, 2, 0);
  CHECK(bw.gb_per_s > 0.1);
  CHECK(bw.gb_per_s < 10000);
  CHECK(bw.buffer_bytes > (uint64_t(31) << 20));
  const MachineInfo m = detect_machine();
  CHECK(m.logical_cores >= 1);
  CHECK(!m.cpu_model.empty());
  CHECK(!m.simd_target.empty());
  const Json j = machine_json(m, &bw);
  CHECK(j["memory_bandwidth"]["gb_per_s"].get<double>() == Approx(bw.gb_per_s));
}
