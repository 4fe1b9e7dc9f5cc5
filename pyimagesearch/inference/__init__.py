"""What inference.py does with a trained model; one module a mode, with what only that mode uses."""
