"""Software-defined assets, one module per concern."""
