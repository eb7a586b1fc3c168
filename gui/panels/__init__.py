"""The settings panels: one form per section of the RunConfig."""
