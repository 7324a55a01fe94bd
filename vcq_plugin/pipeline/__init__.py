"""Reusable stages of the recipes (data, tokenizer training, token export, AR model, sampling)."""
