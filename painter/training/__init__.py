"""Training: the resumable loop shared by both trainers, GPT fine-tuning, VQGAN training, evaluation."""
