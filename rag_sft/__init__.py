"""rag_sft: turn a RAG service's low-scoring answers into daily, versioned SFT datasets."""
