"""Scale-and-speed benchmarks of lightning_sdc (issue #7): ``python -m benchmarks [--device cuda] [--quick]``."""
