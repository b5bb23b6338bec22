"""The trainer (transformers' Seq2SeqTrainer with our loss terms), its schedules, LoRA training and callbacks."""
