# Peer data for tests/formats/test_hf.cpp: builds a tokenizer.json in SmolLM2's published layout
# (Digits + ByteLevel pre-tokenizer, special added tokens) from a GGUF vocabulary read with the
# official `gguf` package, and writes what llmc must read back. Usage: hf_tokenizer_peer.py GGUF DIR
import json, os, sys
from gguf import GGUFReader

r = GGUFReader(sys.argv[1])
f = r.fields
tokens = f["tokenizer.ggml.tokens"].contents()
types = [int(t) for t in f["tokenizer.ggml.token_type"].contents()]
merges = f["tokenizer.ggml.merges"].contents()
bos = int(f["tokenizer.ggml.bos_token_id"].contents())
eos = int(f["tokenizer.ggml.eos_token_id"].contents())
CONTROL = 3
tok = {
    "version": "1.0",
    "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True} for i, t in enumerate(tokens) if types[i] == CONTROL],
    "normalizer": None,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
              "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
              "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
}
d = sys.argv[2]
json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False)
json.dump({"add_prefix_space": False, "bos_token": tokens[bos], "eos_token": tokens[eos], "unk_token": tokens[0],
           "model_max_length": 8192}, open(os.path.join(d, "tokenizer_config.json"), "w"), ensure_ascii=False)
json.dump({"tokens": tokens, "types": types, "merges": merges, "bos": bos, "eos": eos,
           "pre": f["tokenizer.ggml.pre"].contents()}, open(os.path.join(d, "expected.json"), "w"))
print("OK", len(tokens), len(merges))
