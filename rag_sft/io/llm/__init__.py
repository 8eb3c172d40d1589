"""OpenAI-compatible endpoints: `llm_completion` (corrected answers), `completion_cache` (each
answer paid for once) and `judge` (verdicts on answers)."""
