"""Training on the tasks: supervised fine-tuning on successful rollouts (finetune)."""
