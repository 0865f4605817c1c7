"""Reference kernels: plain functions over tensors (weights passed in), thin modules on top.

softmax      stable softmax, log-sum-exp, cross-entropy, Jacobian, online softmax   (01)
attention    scaled dot-product attention with a boolean mask and an additive bias (02)
masks        causal, sliding-window, padding masks, combined                       (03)
heads        split/merge heads, GQA head mapping, MHA (separate, fused, module)     (04)
weights      weight layouts (fused, per-head interleaved, per-head, Conv1D), counts (04)
positions    sinusoidal table and shift map, RoPE (both layouts), ALiBi            (05)
norms        LayerNorm, RMSNorm (float32 statistics, cast back)                    (06)
blocks       GELU/SwiGLU FFN, pre/post-LN block, DeepNorm                          (06)
kv_cache     preallocated cache, cached attention, chunked prefill, cache sizes    (07)
model        the assembled language model (course.lm's reference model)            (08)
decode_floor the hand-flattened decoding step the model is benchmarked against
module       nn.Module with fast attribute reads, the base of every module here
"""
