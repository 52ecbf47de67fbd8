"""Keras 3 layers and models of Variational Memory Addressing."""
