"""A runtime monitor: probes and SAE latents scored at every generated token from the same forward pass.
See docs/monitor.md."""
