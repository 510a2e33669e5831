"""What the events mean: the ATP domain model, the fold (pure Python) and the Redis projection."""
