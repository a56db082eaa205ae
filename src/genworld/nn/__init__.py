"""Network building blocks (no algorithm logic)."""
