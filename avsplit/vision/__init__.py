"""Vision front ends: faces and landmarks, motion energy, instrument recognition."""
