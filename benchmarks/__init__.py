"""Timings: mixed precision against fp32, and Lightning against a plain PyTorch loop."""
