"""What helps choose a run's settings before it trains: the learning-rate range test (``lr_find``).
It builds on the modules up front; nothing up front imports it."""
