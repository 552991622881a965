"""Every numerical tolerance of the suite, each with its reason."""

# fp32 parity with HF on the same input: DESIGN.md's bar for logits (logit scale ~1).
LOGITS_FP32 = 1e-4
# Residual stream and attention patterns, fp32: same arithmetic in another summation order.
RESIDUAL_FP32 = 1e-4
PATTERN_FP32 = 1e-5
# SDPA vs eager softmax inside our own model, fp32.
FUSED_VS_EAGER_FP32 = 1e-5
# Exact identities that go through the same kernels (e.g. an empty edit): bitwise.
EXACT = 0.0
# Sums of many cached components (decompose_resid) vs the final residual, fp32.
DECOMPOSITION_FP32 = 1e-4
# bf16/fp16 vs HF in the same dtype: ~3 significant digits, summation order differs.
LOGITS_HALF = 0.05
