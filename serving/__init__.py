"""How positions are read: the FastAPI availability service."""
