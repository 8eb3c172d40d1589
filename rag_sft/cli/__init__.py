"""The `rag-sft` command."""
