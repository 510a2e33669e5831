"""Generators and load harnesses."""
