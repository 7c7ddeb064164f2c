"""What one training step computes, per stage (the loop that runs them is experiments.loop)."""
