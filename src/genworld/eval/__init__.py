"""Evaluation in the real simulator and score arithmetic."""
