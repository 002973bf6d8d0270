"""The closed loop: simulated user, agent, rollout engine and benchmark scoring."""
