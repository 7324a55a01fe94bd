"""Host launchers for the full-scale recipes: 1d-tokenizer (TiTok) and LlamaGen (extract / train / sample)."""
