"""Training code: data synthesis and training loops (never imported by inference)."""
