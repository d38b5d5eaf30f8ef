# Peer check for tests/formats/test_hf.cpp: the official safetensors package reads llmc's output,
# and llmc reads what the official package writes. Usage: hf_peer.py DIR
#   DIR/out/model.safetensors   written by llmc (HF names, rotate-half q/k)
#   DIR/canon/manifest.json     {canonical_name: [shape, n_head]} and DIR/canon/<name>.f32 raw values
# Checks every tensor against the canonical (interleaved) values through llama.cpp's permute(),
# then writes DIR/py/model.safetensors (f32, HF layout, reversed order) and DIR/py16 (f16, no
# metadata) for llmc to read back.
import json, os, re, sys
import numpy as np
from safetensors.numpy import load_file, save_file

LAYER = {
    "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}


def canonical(hf):
    if hf in GLOBAL:
        return GLOBAL[hf]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf)
    return f"blk.{m.group(1)}.{LAYER[m.group(2)]}"


def permute(w, n_head):
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute: HF rotate-half -> interleaved
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


d = sys.argv[1]
manifest = json.load(open(os.path.join(d, "canon", "manifest.json")))
hf = load_file(os.path.join(d, "out", "model.safetensors"))
assert sorted(canonical(k) for k in hf) == sorted(manifest), (sorted(hf), sorted(manifest))
for name, t in hf.items():
    c = canonical(name)
    shape, n_head = manifest[c]
    want = np.fromfile(os.path.join(d, "canon", c + ".f32"), dtype=np.float32).reshape(shape)
    assert list(t.shape) == shape, (name, t.shape, shape)
    got = t.astype(np.float32)
    if n_head:
        got = permute(got, n_head)
    if not np.array_equal(got, want):
        print("MISMATCH", name, np.abs(got - want).max())
        sys.exit(1)
os.makedirs(os.path.join(d, "py"), exist_ok=True)
save_file({k: hf[k].astype(np.float32) for k in reversed(sorted(hf))}, os.path.join(d, "py", "model.safetensors"),
          metadata={"format": "pt"})
os.makedirs(os.path.join(d, "py16"), exist_ok=True)
save_file({k: hf[k].astype(np.float16) for k in sorted(hf)}, os.path.join(d, "py16", "model.safetensors"))
print("OK", len(hf))
