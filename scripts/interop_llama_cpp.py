# Compares llmc's GGUF exports with llama.cpp (through llama-cpp-python): load, greedy text, logits.
"""Run by scripts/interop inside its virtualenv. For each case it exports a GGUF with `llmc convert`,
loads it in llama.cpp, and checks, on the same token ids:
  - greedy continuations (from BOS and from "Once upon a time"): llama.cpp's argmax loop against
    llmc's (bench/dump_logits --greedy) token by token, and against `llmc generate --temp 0` text;
  - logits of a 64-token text window: max |delta logit|, mean KL(p_llama || p_llmc), top-1 agreement.
Prints one table row per case and exits 1 when any check fails."""

import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np
from llama_cpp import Llama

GGML_TYPE_F32 = 0  # KV cache type: f32 on both sides, so the cache adds no f16 rounding
N_GREEDY = 64
N_LOGITS = 64
PROMPTS = ["", "Once upon a time"]

# f32 exports: both runtimes read identical f32 weights and keep f32 activations and an f32 KV
# cache, so only summation order differs: ~1e-5 relative to logits of magnitude ~10-40.
F32_MAX_DLOGIT = 2e-3
F32_MAX_KL = 1e-6
# f16/q8_0 exports: llama.cpp rounds activations to the weight's dot type (f16, or q8_0 blocks of
# 32 with an f16 scale) while llmc keeps them f32, so the two differ by an activation-rounding
# noise. The gate: llama.cpp and llmc must differ less (mean KL, top-1 agreement) than llama.cpp's
# result differs from the f32 source model (llmc on the source, equal to llama.cpp's at f32).


def run(cmd, **kw):
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


def load_error(path, n_ctx):
    """llama.cpp's own log for a failed load (verbose=False hides it), last lines only."""
    code = ("import sys; from llama_cpp import Llama\n"
            f"Llama(model_path={path!r}, n_ctx={n_ctx}, verbose=True)\n")
    r = run([sys.executable, "-c", code])
    # llama.cpp's lines start with the C function that logged them; drop Python's tracebacks.
    lines = [l for l in (r.stderr + r.stdout).splitlines() if re.match(r"(llama|gguf|ggml)\w*:", l)]
    return "\n    ".join(lines[-8:])


def llmc_logits(args, name, model, extra, ids_file, shape, problems):
    """[n_ids, vocab] logits of `model` from bench/dump_logits, or None after noting the problem."""
    out_file = os.path.join(args.work, f"{name}.logits.f32")
    r = run([args.dump_logits, model, *extra, "--ids-file", ids_file, "--out", out_file])
    if r.returncode != 0:
        problems.append(f"dump_logits {os.path.basename(model)} failed: {r.stderr.strip()}")
        return None
    got = np.fromfile(out_file, dtype=np.float32).astype(np.float64)
    if got.size != shape[0] * shape[1]:
        problems.append(f"dump_logits wrote {got.size} values, llama.cpp has {shape}")
        return None
    return got.reshape(shape)


def kl_top1(ref, got):
    """Mean over positions of KL(softmax(ref) || softmax(got)) in nats, and top-1 agreement."""
    p, q = softmax(ref), softmax(got)
    kl = float(np.mean(np.sum(p * (np.log(p + 1e-300) - np.log(q + 1e-300)), axis=-1)))
    return kl, float(np.mean(ref.argmax(-1) == got.argmax(-1)))


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def llama_greedy(llm, ids, n):
    llm.reset()
    llm.eval(ids)
    out, gaps = [], []
    for _ in range(n):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        top2 = np.sort(logits)[-2:]
        nxt = int(np.argmax(logits))
        out.append(nxt)
        gaps.append(float(top2[1] - top2[0]))
        llm.eval([nxt])
    return out, gaps


def until_stop(tokens, stops):
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[:i]
    return tokens


def norm_text(s):
    return " ".join(s.split())


class Case:
    def __init__(self, name, source, extra, dtype, text_file, n_ctx):
        self.name, self.source, self.extra, self.dtype = name, source, extra, dtype
        self.text_file, self.n_ctx = text_file, n_ctx


def check_case(args, case, rows):
    gguf = os.path.join(args.work, f"{case.name}.gguf")
    tok_args = case.extra
    t0 = time.time()
    r = run([args.llmc, "convert", case.source, *tok_args, "-o", gguf, "--dtype", case.dtype, "--force"])
    if r.returncode != 0:
        rows.append((case.name, "FAIL", f"llmc convert failed: {r.stderr.strip()}"))
        return
    convert_s = time.time() - t0
    try:
        llm = Llama(model_path=gguf, n_ctx=case.n_ctx, n_batch=case.n_ctx, n_threads=args.threads,
                    logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)
    except Exception as e:  # llama.cpp refused our file: that is the finding
        rows.append((case.name, "FAIL", f"llama.cpp refused the file ({e}):\n    {load_error(gguf, case.n_ctx)}"))
        return
    stops = {llm.token_eos(), llm.token_bos()}
    problems, notes = [], [f"convert {convert_s:.1f}s"]

    # Logits over the same window of evaluation text (BOS first).
    text = open(case.text_file, encoding="utf-8").read()[:4000]
    ids = llm.tokenize(text.encode(), add_bos=True, special=False)[:N_LOGITS]
    if ids[0] != llm.token_bos():
        ids = [llm.token_bos()] + ids[:N_LOGITS - 1]
    llm.reset()
    llm.eval(ids)
    ref = np.array(llm.scores[:len(ids)], dtype=np.float64)
    ids_file = os.path.join(args.work, f"{case.name}.text.ids")
    with open(ids_file, "w") as f:
        f.write(" ".join(map(str, ids)))
    got = llmc_logits(args, case.name, gguf, [], ids_file, ref.shape, problems)
    # The source model in f32 through llmc: the yardstick for what quantization itself costs.
    base = llmc_logits(args, case.name + ".source", case.source, case.extra, ids_file, ref.shape, problems)
    if got is None or base is None:
        rows.append((case.name, "FAIL", "; ".join(problems)))
        return
    dmax = float(np.abs(got - ref).max())
    kl, top1 = kl_top1(ref, got)
    kl_quant, top1_quant = kl_top1(base, ref)
    tie_gap = 2 * dmax  # a greedy divergence is explained where llama.cpp's top-2 gap is below this
    notes.insert(0, f"max|dlogit| {dmax:.2e} (|logit|max {np.abs(ref).max():.1f}) KL {kl:.2e} top1 {top1:.3f}"
                 f" [llama.cpp vs f32 source: KL {kl_quant:.2e} top1 {top1_quant:.3f}]")
    if case.dtype == "f32":
        if dmax > F32_MAX_DLOGIT or kl > F32_MAX_KL:
            problems.append(f"f32: max|dlogit| {dmax:.3g} (limit {F32_MAX_DLOGIT}), KL {kl:.3g} (limit {F32_MAX_KL})")
    elif kl > kl_quant or top1 < top1_quant:
        problems.append(f"{case.dtype}: llama.cpp and llmc differ more (KL {kl:.3g}, top1 {top1:.3f}) than "
                        f"llama.cpp differs from the f32 source (KL {kl_quant:.3g}, top1 {top1_quant:.3f})")

    # Greedy continuations on the ids llama.cpp's tokenizer gives; llmc must tokenize the same.
    for prompt in PROMPTS:
        # As `llmc generate`: BOS only where the vocabulary asks for it, or alone for an empty prompt.
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False) if prompt else [llm.token_bos()]
        has_bos = ids[0] == llm.token_bos()
        label = repr(prompt) if prompt else "BOS"
        r = run([args.llmc, "tokenize", gguf, "--text", prompt, *(["--bos"] if has_bos else [])]) if prompt else None
        if r is not None:
            llmc_ids = [int(t) for t in r.stdout.replace(",", " ").replace("[", " ").replace("]", " ").split()
                        if t.lstrip("-").isdigit()]
            if r.returncode != 0 or llmc_ids != ids:
                problems.append(f"{label}: tokenizers differ: llama.cpp {ids} llmc {llmc_ids or r.stderr.strip()}")
        ll_tokens, gaps = llama_greedy(llm, ids, N_GREEDY)
        ids_file = os.path.join(args.work, f"{case.name}.prompt.ids")
        out_file = os.path.join(args.work, f"{case.name}.greedy.ids")
        with open(ids_file, "w") as f:
            f.write(" ".join(map(str, ids)))
        r = run([args.dump_logits, gguf, "--ids-file", ids_file, "--out", out_file, "--greedy", str(N_GREEDY)])
        if r.returncode != 0:
            problems.append(f"{label}: dump_logits --greedy failed: {r.stderr.strip()}")
            continue
        mc_tokens = [int(t) for t in open(out_file).read().split()]
        a, b = until_stop(ll_tokens, stops), until_stop(mc_tokens, stops)
        same = 0
        while same < min(len(a), len(b)) and a[same] == b[same]:
            same += 1
        if a == b:
            notes.append(f"{label}: {len(a)}/{len(a)} greedy tokens equal")
        elif same < min(len(a), len(b)) and gaps[same] < tie_gap:
            notes.append(f"{label}: diverge at token {same} (near-tie, top-2 gap {gaps[same]:.3g})")
        else:
            gap = gaps[same] if same < len(gaps) else float("nan")
            problems.append(f"{label}: greedy tokens diverge at {same} of {len(a)}/{len(b)} (top-2 gap {gap:.3g})")
        # The same continuation as text from `llmc generate --temp 0` (-n counts prompt positions).
        steps = len(ids) + N_GREEDY - 1
        r = run([args.llmc, "generate", gguf, "--prompt", prompt, "--temp", "0", "-n", str(steps)])
        want = llm.detokenize(a, prev_tokens=ids).decode("utf-8", errors="replace")
        got = r.stdout[len(prompt):] if r.stdout.startswith(prompt) else r.stdout
        if r.returncode != 0:
            problems.append(f"{label}: llmc generate failed: {r.stderr.strip()}")
        elif a == b and norm_text(got) != norm_text(want):
            problems.append(f"{label}: llmc generate text differs:\n    llama.cpp: {want[:120]!r}\n    llmc:      {got[:120]!r}")

    rows.append((case.name, "FAIL" if problems else "ok", "; ".join(problems + notes)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmc", required=True)
    ap.add_argument("--dump-logits", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--smollm2", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    m = os.path.join(args.fixtures, "models", "stories260K")
    stories = (os.path.join(m, "stories260K.bin"), ["--tokenizer", os.path.join(m, "tok512.bin")])
    tiny = os.path.join(args.fixtures, "text", "tinystories-sample.txt")
    wiki = os.path.join(args.fixtures, "text", "wikitext2-test.txt")
    cases = [Case(f"stories260K-{d}", *stories, d, tiny, 512) for d in ("f32", "f16", "q8_0")]
    if os.path.exists(args.smollm2):
        cases += [Case(f"smollm2-{d}", args.smollm2, [], d, wiki, 256) for d in ("f32", "q8_0")]
    else:
        print(f"interop: {args.smollm2} missing: SmolLM2 cases skipped (run scripts/setup)")
    if args.only:
        cases = [c for c in cases if c.name in args.only.split(",")]
    os.makedirs(args.work, exist_ok=True)
    rows = []
    for case in cases:
        t0 = time.time()
        check_case(args, case, rows)
        print(f"interop: {case.name} checked in {time.time() - t0:.1f} s", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'case':<{width}}  result  details")
    for name, result, details in rows:
        print(f"{name:<{width}}  {result:<6}  {details}")
    failed = sum(r[1] != "ok" for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
