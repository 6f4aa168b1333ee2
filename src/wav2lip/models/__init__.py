"""The networks, as `nn.Module`s that take tensors and know nothing of files."""
