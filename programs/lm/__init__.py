"""LM configuration: per-role settings, building dspy.LM clients, usage accounting."""
