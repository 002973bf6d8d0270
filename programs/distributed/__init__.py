"""Running generation items and bench rollouts as Ray work (the optional ``[ray]`` extra)."""
