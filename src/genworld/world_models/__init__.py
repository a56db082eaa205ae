"""World models: simulators learned from offline data (first-class components, not parents)."""
