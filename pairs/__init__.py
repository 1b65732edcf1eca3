"""Real pairs: a trained standardizer run over curated photos -> (standardized reference, target)
records, and router samples. Built by the Stage II issues."""
