"""What quantization did to a model: metrics, layer-by-layer comparison, plots and reports."""
