"""Zero-shot evaluation: lm-evaluation-harness's scoring rules, natively in JAX."""
