"""How far a prediction can be trusted: probabilities calibrated by a temperature, and a novelty
score that tells a photo unlike every class the model knows."""
