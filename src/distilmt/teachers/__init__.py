"""Where the teacher's signal comes from: a live model, a top-k cache, an ensemble, a causal LM, or its translations."""
