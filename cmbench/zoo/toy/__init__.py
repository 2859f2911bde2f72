"""The toy world: 8×8 digits, a zoo of all five families trained on them, a toy classifier."""
