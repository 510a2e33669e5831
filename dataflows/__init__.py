"""How events flow: Bytewax dataflows and their Kafka and Redis wiring."""
