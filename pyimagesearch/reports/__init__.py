"""How good a model is, from its predictions: metrics, the confusion matrix, the most confident
mistakes, and the views a report takes when there are many classes. Imports only ``utils``."""
