"""What inference.py does with a trained model: predict (the random batch, your photos, an
evaluation), annotate photos, classify video frames, and export to ONNX for OpenCV's DNN module."""
