"""Verification: the deterministic verifier and the code checks of each intent condition."""
