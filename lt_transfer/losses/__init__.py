"""Transfer-learning losses, each as a function and an ``nn.Module``."""

__all__: list[str] = []
